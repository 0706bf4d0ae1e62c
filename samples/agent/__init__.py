"""The agent sample: a research assistant that streams, calls tools, waits for a human
and survives crashes (a streaming durable flow)."""

"""Frontend protocols served over any `StreamManager`: Durable Streams and the AI SDK."""

from .durable_streams import DurableStreamsApp

__all__ = ["DurableStreamsApp"]

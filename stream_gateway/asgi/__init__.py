"""ASGI apps serving flows over the Genkit protocol and standard SSE."""

from .frames import genkit_frames, sse_frames
from .gateway import FlowHandler, Gateway
from .runner import FlowRunner

__all__ = ["FlowHandler", "FlowRunner", "Gateway", "genkit_frames", "sse_frames"]

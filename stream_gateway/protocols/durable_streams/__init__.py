"""The Durable Streams HTTP protocol (PUT, POST, GET, HEAD, DELETE on stream URLs)."""

from .app import DurableStreamsApp

__all__ = ["DurableStreamsApp"]

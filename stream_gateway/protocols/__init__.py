"""Frontend protocols served over any `StreamManager`: Durable Streams and the AI SDK."""

from .ai_sdk import UIMessageEncoder, UIMessageStreamApp
from .durable_streams import DurableStreamsApp

__all__ = ["DurableStreamsApp", "UIMessageEncoder", "UIMessageStreamApp"]

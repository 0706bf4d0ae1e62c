"""The Vercel AI SDK's UI-message stream (``useChat``), served from a flow."""

from .app import UIMessageStreamApp
from .parts import UIMessageEncoder

__all__ = ["UIMessageEncoder", "UIMessageStreamApp"]

"""The adapters run on the gateway's backends (GATEWAY_BACKENDS, memory and SQLite)."""

from tests.gateway.conftest import harness

__all__ = ["harness"]

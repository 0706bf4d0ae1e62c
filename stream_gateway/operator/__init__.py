"""The operator dashboard: every stream and durable execution, across owners.

`operator_app` is a Starlette app to mount (``Mount("/operator", operator_app(...))``):
a web page (its HTML, script and styles served by the app itself, nothing from a CDN)
over a JSON API under ``/api``. Operators see every owner's streams, executions and
schedules and act on them: cancel, stop, resume an interrupt, signal, recover, wake,
pause and resume schedules.

It has its own auth, separate from the gateway's: a context provider (as for
`Gateway`) that admits operators. Without one every read and action is refused, unless
``dangerously_allow_unauthenticated=True`` says otherwise. `token_auth` is a ready
provider for bearer tokens. See docs/operator.md.
"""

from __future__ import annotations

from ._auth import token_auth
from .app import operator_app

__all__ = ["operator_app", "token_auth"]

"""Operator auth: who may use the dashboard, decided on every request."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request

from .._errors import PermissionDeniedError, UnauthenticatedError
from ..flow import ContextProvider, RequestContext

__all__ = ["NO_AUTH", "token_auth"]

NO_AUTH = (
    "the operator app has no auth: pass auth= to operator_app (e.g. token_auth({...})),"
    " or dangerously_allow_unauthenticated=True to let anyone who reaches it act"
)


def token_auth(tokens: Mapping[str, str]) -> ContextProvider:
    """A context provider admitting ``Authorization: Bearer <token>`` for each token
    in ``tokens`` (token -> operator name, the principal). Tokens are compared in
    constant time; a missing header is 401 ``UNAUTHENTICATED``, an unknown token 403
    ``PERMISSION_DENIED``. Tokens must be at least 16 characters."""
    known = {token.encode(): name for token, name in tokens.items()}
    if not known:
        raise ValueError("token_auth needs at least one token")
    if any(len(token) < 16 for token in known):
        raise ValueError("operator tokens must be at least 16 characters")

    async def authenticate(request: Request) -> RequestContext:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("operator login required: send Authorization: Bearer")
        given = token.strip().encode()
        name = None
        for candidate, operator in known.items():
            # Every candidate is compared, so the time taken tells nothing.
            if hmac.compare_digest(candidate, given):
                name = operator
        if name is None:
            raise PermissionDeniedError("unknown operator token")
        return RequestContext(principal=name)

    return authenticate

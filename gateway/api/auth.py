"""Who is asking: the bearer token of a request, resolved to a zones ``Consumer``.

- ``http.token`` is the operator's token: it sees every zone, class and secrecy level.
- Each ``[[token]]`` is a consumer that sees only its zones and classes (``gateway.zones``).
- With no token configured at all (loopback development), requests act as the local
  operator. The gateway refuses to listen beyond loopback without ``http.token``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from gateway.zones import Consumer

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["ConsumerDep", "authorize"]


def authorize(request: Request) -> Consumer:
    """The consumer behind the request's bearer token, or 401."""
    gw: Gateway = request.app.state.gw
    operator_token = gw.config.http.token
    if not operator_token and not gw.config.token:
        return gw.operator
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        secret = value.strip()
        is_operator = bool(operator_token) and hmac.compare_digest(
            secret.encode(), operator_token.encode()
        )
        consumer = gw.zones.consumer_for_token(secret)
        if is_operator:
            return gw.operator
        if consumer is not None:
            return consumer
    raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


ConsumerDep = Annotated[Consumer, Depends(authorize)]

"""Who is asking: the bearer token of a request, resolved to a zones ``Consumer``.

- ``http.token`` is the operator's token: it sees every zone, class and secrecy level.
- Each ``[[token]]`` is a consumer that sees only its zones and classes (``gateway.zones``).
- With no token configured at all (loopback development), requests act as the local
  operator. The gateway refuses to listen beyond loopback without ``http.token``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from gateway.zones import Consumer

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["ConsumerDep", "authorize"]


def authorize(request: Request) -> Consumer:
    """The consumer behind the request's bearer token, or 401."""
    gw: Gateway = request.app.state.gw
    local = gw.zones.local_consumer()
    if local is not None:
        return local
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        consumer = gw.zones.consumer_for_token(value.strip())
        if consumer is not None:
            return consumer
    raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


ConsumerDep = Annotated[Consumer, Depends(authorize)]

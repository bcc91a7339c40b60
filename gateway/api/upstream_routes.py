"""Cascade state: each ``[[upstream]]`` this node registers to (operators only)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from gateway.api.auth import ConsumerDep

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["router"]

router = APIRouter()


class UpstreamOut(BaseModel):
    """One upstream platform as the API shows it."""

    name: str
    id: str
    local_id: str
    host: str
    port: int
    transport: str
    registered: bool
    last_error: str
    registered_at: datetime | None
    keepalives_ok: int
    streams: int
    subscriptions: int
    refused_sources: int
    """Requests that claimed this upstream's ID from an address not in its ``sources``."""


@router.get("/api/upstreams", response_model=list[UpstreamOut], tags=["cascade"])
async def list_upstreams(request: Request, consumer: ConsumerDep) -> list[UpstreamOut]:
    """Registration state, keepalives and streams of every upstream."""
    gw: Gateway = request.app.state.gw
    if not gw.zones.sees_all(consumer):
        raise HTTPException(403, "only the operator may see upstream platforms")
    return [UpstreamOut.model_validate(i) for i in gw.cascade.info()]

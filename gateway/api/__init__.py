"""HTTP API (FastAPI, served by uvicorn on the gateway's loop).

JSON everywhere, OpenAPI at ``/openapi.json``. When a bearer token is configured (required
whenever ``http.listen`` is not loopback) every route but ``/healthz`` needs
``Authorization: Bearer <token>``. SIP-style errors raised by services map to HTTP statuses in
one handler.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from gateway.api.auth import ConsumerDep
from gateway.api.catalog_routes import router as catalog_router
from gateway.api.console_routes import router as console_router
from gateway.api.live_routes import router as live_router
from gateway.api.upstream_routes import router as upstream_router
from gateway.api.whep_routes import router as whep_router
from sip.errors import SipError

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.registrar import Device

__all__ = ["create_api"]


class DeviceOut(BaseModel):
    """A device as the API shows it."""

    device_id: str
    name: str
    online: bool
    transport: str
    address: str
    registered_at: datetime | None
    last_seen: datetime | None
    expires_at: datetime | None
    manufacturer: str
    model: str
    firmware: str
    channel_count: int


class Health(BaseModel):
    """Liveness answer."""

    status: str


class Deleted(BaseModel):
    """Result of a DELETE."""

    deleted: str


def _device_out(d: Device) -> DeviceOut:
    return DeviceOut(
        device_id=d.device_id,
        name=d.name,
        online=d.online,
        transport=d.transport,
        address=f"{d.host}:{d.port}" if d.host else "",
        registered_at=d.registered_at,
        last_seen=d.last_seen,
        expires_at=d.expires_at,
        manufacturer=d.manufacturer,
        model=d.model,
        firmware=d.firmware,
        channel_count=d.channel_count,
    )


def create_api(gw: Gateway) -> FastAPI:
    """The FastAPI application for one gateway."""
    app = FastAPI(
        title="gbgw",
        version="0.1.0",
        description="GB/T 28181 gateway: registrar, catalog, media relay and cascade.",
    )
    app.state.gw = gw
    app.include_router(catalog_router)
    app.include_router(live_router)
    app.include_router(upstream_router)
    app.include_router(whep_router)
    app.include_router(console_router)

    @app.exception_handler(SipError)
    async def _sip_error(_: Request, exc: SipError) -> JSONResponse:
        status = {400: 400, 401: 401, 403: 403, 404: 404, 486: 503, 503: 503, 504: 504}.get(
            exc.status, 502
        )
        return JSONResponse({"detail": exc.reason or type(exc).__name__}, status_code=status)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """Liveness: the loop answers."""
        return Health(status="ok")

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(consumer: ConsumerDep) -> Response:
        """Prometheus text format."""
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/devices", response_model=list[DeviceOut], tags=["devices"])
    async def list_devices(
        consumer: ConsumerDep,
        online: Annotated[bool | None, Query(description="only online / offline devices")] = None,
    ) -> list[DeviceOut]:
        """Every known device, optionally filtered by online state."""
        devices = gw.registrar.devices.values()
        return [
            _device_out(d)
            for d in devices
            if (online is None or d.online == online) and gw.device_visible(consumer, d.device_id)
        ]

    @app.get("/api/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    async def get_device(device_id: str, consumer: ConsumerDep) -> DeviceOut:
        """One device."""
        d = gw.registrar.devices.get(device_id)
        if d is None or not gw.device_visible(consumer, device_id):
            raise HTTPException(404, f"device {device_id} not found")
        return _device_out(d)

    @app.delete("/api/devices/{device_id}", response_model=Deleted, tags=["devices"])
    async def delete_device(device_id: str, consumer: ConsumerDep) -> Deleted:
        """Unregister and forget a device and its channels."""
        if not gw.zones.sees_all(consumer):
            raise HTTPException(403, "only the operator may delete devices")
        if not await gw.registrar.forget(device_id):
            raise HTTPException(404, f"device {device_id} not found")
        return Deleted(deleted=device_id)

    return app

"""Catalog, tree, PTZ, audit and KPI routes; every answer goes through ``gateway.zones``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from gateway.api.auth import ConsumerDep
from gateway.channels import Channel
from gateway.manscdp import PTZ_ACTIONS, ManscdpError, from_action

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["router"]

router = APIRouter()


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


class ChannelOut(BaseModel):
    """A channel as the API shows it."""

    channel_id: str
    device_id: str
    name: str
    kind: str
    civil_code: str
    parent_id: str
    business_group_id: str
    status: str
    manufacturer: str
    model: str
    address: str
    longitude: float | None
    latitude: float | None
    ptz_type: int | None
    resolution: str
    zone: str
    class_: int = Field(serialization_alias="class")

    model_config = {"populate_by_name": True}


def channel_out(c: Channel) -> ChannelOut:
    """The API view of a channel."""
    return ChannelOut(
        channel_id=c.channel_id,
        device_id=c.device_id,
        name=c.name,
        kind=c.kind,
        civil_code=c.civil_code,
        parent_id=c.parent_id,
        business_group_id=c.business_group_id,
        status=c.status,
        manufacturer=c.manufacturer,
        model=c.model,
        address=c.address,
        longitude=c.longitude,
        latitude=c.latitude,
        ptz_type=c.ptz_type,
        resolution=c.resolution,
        zone=c.zone,
        class_=c.class_,
    )


class ChannelPage(BaseModel):
    """One page of channels."""

    total: int
    offset: int
    limit: int
    items: list[ChannelOut]


class CatalogResult(BaseModel):
    """Result of a catalog query."""

    device_id: str
    channels: int
    complete: bool


class PtzRequest(BaseModel):
    """A PTZ command for one channel."""

    channel_id: str = Field(pattern=r"^[0-9]{20}$")
    action: str = Field(description="one of: " + ", ".join(PTZ_ACTIONS))
    speed: int = Field(default=128, ge=0, le=255)


class PtzResult(BaseModel):
    """The device's answer to a PTZ command."""

    channel_id: str
    ptz_cmd: str
    result: str


@router.get(
    "/api/devices/{device_id}/channels",
    response_model=list[ChannelOut],
    tags=["catalog"],
    response_model_by_alias=True,
)
async def device_channels(device_id: str, request: Request, consumer: ConsumerDep) -> Any:
    """The channels of one device that this consumer may see."""
    gw = _gw(request)
    if device_id not in gw.registrar.devices or not gw.device_visible(consumer, device_id):
        raise HTTPException(404, f"device {device_id} not found")
    chans = gw.zones.filter(consumer, gw.channels.of_device(device_id))
    return [channel_out(c) for c in chans]


@router.get(
    "/api/channels", response_model=ChannelPage, tags=["catalog"], response_model_by_alias=True
)
async def list_channels(
    request: Request,
    consumer: ConsumerDep,
    civil_code: Annotated[str | None, Query(description="civil-code prefix")] = None,
    zone: str | None = None,
    class_: Annotated[int | None, Query(alias="class", ge=1, le=3)] = None,
    status: Annotated[Literal["ON", "OFF"] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=64, description="text in the name")] = None,
    kind: str = "channel",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> Any:
    """Channels this consumer may see, filtered and paged."""
    gw = _gw(request)
    rows = []
    for c in gw.zones.filter(consumer, gw.channels):
        if kind and c.kind != kind:
            continue
        if civil_code and not (c.civil_code or c.channel_id).startswith(civil_code):
            continue
        if zone and c.zone != zone:
            continue
        if class_ and c.class_ != class_:
            continue
        if status and c.status != status:
            continue
        if q and q not in c.name:
            continue
        rows.append(c)
    rows.sort(key=lambda c: (c.civil_code, c.channel_id))
    page = rows[offset : offset + limit]
    return ChannelPage(
        total=len(rows), offset=offset, limit=limit, items=[channel_out(c) for c in page]
    )


def _node(node_id: str, name: str, kind: str) -> dict[str, Any]:
    return {"id": node_id, "name": name, "kind": kind, "children": []}


@router.get("/api/tree", tags=["catalog"])
async def tree(request: Request, consumer: ConsumerDep) -> dict[str, Any]:
    """Civil-code hierarchy (province > city > county > grassroots > channels) and the
    business-group trees (215 > 216 > channels), with only channels this consumer may see."""
    gw = _gw(request)
    visible = [c for c in gw.zones.filter(consumer, gw.channels) if c.kind == "channel"]
    names = {c.channel_id: c.name for c in gw.channels if c.kind != "channel"}
    # civil-code tree
    root: dict[str, Any] = _node("", "all", "root")
    index: dict[str, dict[str, Any]] = {"": root}

    def region(code: str) -> dict[str, Any]:
        if code in index:
            return index[code]
        parent = region(code[:-2] if len(code) > 2 else "")
        level = {2: "province", 4: "city", 6: "county", 8: "grassroots"}.get(len(code), "region")
        node = _node(code, names.get(code, code), level)
        parent["children"].append(node)
        index[code] = node
        return node

    for c in sorted(visible, key=lambda c: c.channel_id):
        code = (c.civil_code or c.channel_id[:8])[:8]
        code = code[: len(code) - len(code) % 2]
        leaf = region(code) if code else root
        leaf["children"].append(
            {
                "id": c.channel_id,
                "name": c.name,
                "kind": "channel",
                "status": c.status,
                "zone": c.zone,
                "class": c.class_,
                "device_id": c.device_id,
            }
        )
    # business groups and virtual organisations (from lower platforms)
    groups: list[dict[str, Any]] = []
    gindex: dict[str, dict[str, Any]] = {}
    for c in gw.channels:
        if c.kind == "business_group":
            gindex[c.channel_id] = _node(c.channel_id, c.name, "business_group")
            groups.append(gindex[c.channel_id])
    for c in gw.channels:
        if c.kind == "virtual_org":
            gindex[c.channel_id] = _node(c.channel_id, c.name, "virtual_org")
    for c in gw.channels:
        if c.kind == "virtual_org":
            parent = gindex.get(c.parent_id) or gindex.get(c.business_group_id)
            if parent is not None and parent is not gindex[c.channel_id]:
                parent["children"].append(gindex[c.channel_id])
    for c in visible:
        parent = gindex.get(c.parent_id) or gindex.get(c.business_group_id)
        if parent is not None:
            parent["children"].append(
                {"id": c.channel_id, "name": c.name, "kind": "channel", "status": c.status}
            )
    return {"civil": root["children"], "business_groups": _prune(groups)}


def _prune(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop group branches with no visible channel (an empty branch could still leak names
    of groups created for a zone the consumer may not see)."""
    out = []
    for n in nodes:
        if n["kind"] == "channel":
            out.append(n)
            continue
        n["children"] = _prune(n["children"])
        if n["children"]:
            out.append(n)
    return out


@router.post("/api/devices/{device_id}/catalog", response_model=CatalogResult, tags=["catalog"])
async def query_catalog(device_id: str, request: Request, consumer: ConsumerDep) -> CatalogResult:
    """Query the device's catalog now and wait until it is committed."""
    gw = _gw(request)
    if device_id not in gw.registrar.devices or not gw.device_visible(consumer, device_id):
        raise HTTPException(404, f"device {device_id} not found")
    count = await gw.catalog.query(device_id)
    st = gw.catalog.state.get(device_id)
    return CatalogResult(device_id=device_id, channels=count, complete=bool(st and st.complete))


@router.post("/api/devices/{device_id}/ptz", response_model=PtzResult, tags=["control"])
async def ptz(
    device_id: str, body: PtzRequest, request: Request, consumer: ConsumerDep
) -> PtzResult:
    """Send a PTZ command; answered with the device's result, or 504 on timeout."""
    gw = _gw(request)
    peer = request.client.host if request.client else ""
    channel = gw.channels.get(body.channel_id, device_id)
    if channel is None:
        gw.zones.check_unknown(consumer, body.channel_id, "ptz", peer)
        raise HTTPException(404, f"channel {body.channel_id} not found on {device_id}")
    gw.zones.check(consumer, channel, "ptz", peer)
    try:
        cmd = from_action(body.action, body.speed)
    except (ManscdpError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    gw.audit.record(consumer, "ptz", body.channel_id, peer, detail=f"{body.action}:{cmd.encode()}")
    await gw.manscdp.ptz(device_id, body.channel_id, cmd)
    return PtzResult(channel_id=body.channel_id, ptz_cmd=cmd.encode(), result="ok")


@router.get("/api/devices/{device_id}/status", tags=["control"])
async def device_status(device_id: str, request: Request, consumer: ConsumerDep) -> dict[str, Any]:
    """Query the device's DeviceStatus."""
    gw = _gw(request)
    if device_id not in gw.registrar.devices or not gw.device_visible(consumer, device_id):
        raise HTTPException(404, f"device {device_id} not found")
    st = await gw.manscdp.device_status(device_id)
    return {
        "device_id": device_id,
        "result": st.result,
        "online": st.online,
        "status": st.status,
        "encode": st.encode,
        "record": st.record,
        "device_time": st.device_time,
        "alarms": [{"device_id": a.device_id, "duty_status": a.duty_status} for a in st.alarms],
    }


class AuditOut(BaseModel):
    """One audit entry."""

    at: datetime
    consumer: str
    action: str
    target: str
    peer: str | None
    result: str | None
    detail: str | None


@router.get("/api/audit", response_model=list[AuditOut], tags=["operations"])
async def audit(
    request: Request,
    consumer: ConsumerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    who: Annotated[str | None, Query(alias="consumer")] = None,
) -> list[AuditOut]:
    """Audit log, newest first. A token sees its own entries; the operator sees all."""
    gw = _gw(request)
    if not gw.zones.sees_all(consumer):
        who = consumer.name
    entries = await gw.audit.query(limit=limit, offset=offset, consumer=who)
    return [
        AuditOut(
            at=e.at,
            consumer=e.consumer,
            action=e.action,
            target=e.target,
            peer=e.peer,
            result=e.result,
            detail=e.detail,
        )
        for e in entries
    ]


@router.get("/api/kpi", tags=["operations"])
async def kpi(
    request: Request,
    consumer: ConsumerDep,
    by: Annotated[str, Query(pattern=r"^(county|class|county,class|class,county)$")] = "county",
) -> dict[str, Any]:
    """The plan's KPIs (online, networking, availability, HD rates) by county and/or class."""
    gw = _gw(request)
    keys = tuple(sorted(by.split(","), key=lambda k: k != "county"))
    rows = gw.kpi_rows(consumer, keys)
    return {"by": list(keys), "target": gw.config.kpi.target, "rows": rows}

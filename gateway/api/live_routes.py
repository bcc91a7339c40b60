"""Live media over HTTP (FLV, MPEG-TS, PS), the stream list and channel snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from gateway.api.auth import ConsumerDep
from media.sinks import SnapshotError, snapshot_jpeg

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["router"]

router = APIRouter()

CONTENT_TYPES = {"flv": "video/x-flv", "ts": "video/mp2t", "ps": "video/mp2p"}


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


@router.get("/live/{channel_id}.{fmt}", tags=["media"], response_class=StreamingResponse)
async def live(
    channel_id: str, fmt: str, request: Request, consumer: ConsumerDep
) -> StreamingResponse:
    """Start or join the channel's live stream and serve it until the client disconnects."""
    if fmt not in CONTENT_TYPES:
        raise HTTPException(404, f"unknown format {fmt!r}: use .flv, .ts or .ps")
    gw = _gw(request)
    stream = await gw.streams.open(channel_id, consumer, _peer(request))
    sub = stream.hub.subscribe(fmt)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in sub:
                yield chunk
        finally:
            sub.close()

    return StreamingResponse(
        body(),
        media_type=CONTENT_TYPES[fmt],
        headers={"Cache-Control": "no-store", "X-Stream-Id": stream.stream_id},
    )


@router.get("/api/streams", tags=["media"])
async def list_streams(request: Request, consumer: ConsumerDep) -> list[dict[str, Any]]:
    """Live streams this consumer may see."""
    gw = _gw(request)
    return [s.info() for s in gw.streams.streams.values() if gw.zones.allows(consumer, s.channel)]


@router.delete("/api/streams/{stream_id}", tags=["media"])
async def delete_stream(stream_id: str, request: Request, consumer: ConsumerDep) -> dict[str, str]:
    """End a stream for every consumer (BYE to the device)."""
    gw = _gw(request)
    stream = gw.streams.streams.get(stream_id)
    if stream is None or not gw.zones.allows(consumer, stream.channel):
        raise HTTPException(404, f"stream {stream_id} not found")
    gw.audit.record(consumer, "stream_stop", stream.channel.channel_id, _peer(request))
    gw.streams.close(stream, "api")
    return {"deleted": stream_id}


@router.get("/api/channels/{channel_id}/snapshot.jpg", tags=["media"], response_class=Response)
async def snapshot(channel_id: str, request: Request, consumer: ConsumerDep) -> Response:
    """A JPEG of the channel's latest keyframe (starts the stream if needed)."""
    gw = _gw(request)
    stream = await gw.streams.open(channel_id, consumer, _peer(request), action="snapshot")
    units = stream.hub.subscribe_units()
    try:
        first = units.get_nowait()
    finally:
        units.close()
    gw.streams.hold_until_idle(stream)
    if first is None:
        raise HTTPException(504, "no keyframe cached yet")
    try:
        jpeg = await snapshot_jpeg([first])
    except SnapshotError as exc:
        raise HTTPException(502, f"snapshot failed: {exc}") from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

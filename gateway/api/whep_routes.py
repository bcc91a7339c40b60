"""WebRTC live view over WHEP (RFC 9725, non-trickle) and the WebRTC session list.

``POST /whep/{channel_id}`` takes an SDP offer (``Content-Type: application/sdp``) with the
viewer's candidates and answers ``201 Created`` with the SDP answer, all of the gateway's
candidates in it, and ``Location: /whep/{channel_id}/{session_id}``; ``DELETE`` on that URL
ends the session. Zone checks, audit and stream start are those of the HTTP viewers; 403, 404
and 504 mean what they mean there. PATCH (trickle ICE, ICE restart) is not offered: 405.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

from gateway.api.auth import ConsumerDep
from gateway.webrtc import MAX_OFFER_BYTES, WhepError

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["router"]

router = APIRouter()

SDP = "application/sdp"


class WebRtcSessionOut(BaseModel):
    """A WebRTC session as the API shows it."""

    session_id: str
    channel_id: str
    stream_id: str
    consumer: str
    peer: str
    started_at: datetime
    codec: str
    """``h264`` (passed through) or ``h265>h264`` (transcoded)."""
    audio_codec: str | None
    state: str
    """The peer connection's state: new, connecting, connected, failed, closed."""


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


async def _offer(request: Request) -> str:
    """The request body as SDP text: 415 for another content type, 413 past the size cap."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != SDP:
        raise HTTPException(415, f"the offer must be sent as Content-Type: {SDP}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise HTTPException(413, f"the SDP offer exceeds {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the SDP offer is not UTF-8 text") from None


@router.post(
    "/whep/{channel_id}",
    tags=["webrtc"],
    status_code=201,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {SDP: {"schema": {"type": "string"}}},
            "description": "The viewer's SDP offer (recvonly H.264 video, optional audio), "
            "with its ICE candidates.",
        },
        "responses": {
            "201": {
                "description": "The SDP answer; Location names the session.",
                "content": {SDP: {"schema": {"type": "string"}}},
            }
        },
    },
)
async def whep_offer(channel_id: str, request: Request, consumer: ConsumerDep) -> Response:
    """Start a WebRTC session on the channel's live stream (starting the stream if needed)."""
    gw = _gw(request)
    offer = await _offer(request)
    try:
        session_id, answer = await gw.webrtc.create(channel_id, consumer, offer, _peer(request))
    except WhepError as exc:
        raise HTTPException(exc.status, exc.reason) from None
    return Response(
        answer,
        status_code=201,
        media_type=SDP,
        headers={
            "Location": f"/whep/{channel_id}/{session_id}",
            "Cache-Control": "no-store",
        },
    )


@router.delete("/whep/{channel_id}/{session_id}", tags=["webrtc"], status_code=204)
async def whep_delete(
    channel_id: str, session_id: str, request: Request, consumer: ConsumerDep
) -> Response:
    """End a WebRTC session: its creator or the operator may."""
    gw = _gw(request)
    session = gw.webrtc.sessions.get(session_id)
    if (
        session is None
        or session.channel.channel_id != channel_id
        or not gw.zones.allows(consumer, session.channel)
    ):
        raise HTTPException(404, f"WebRTC session {session_id} not found")
    own = (session.consumer.name, session.consumer.kind) == (consumer.name, consumer.kind)
    if not own and not gw.zones.sees_all(consumer):
        raise HTTPException(403, "only the session's own consumer or the operator may end it")
    gw.webrtc.close(session_id, "delete")
    return Response(status_code=204)


@router.get("/api/webrtc", tags=["webrtc"], response_model=list[WebRtcSessionOut])
async def list_sessions(request: Request, consumer: ConsumerDep) -> list[WebRtcSessionOut]:
    """WebRTC sessions on channels this consumer may see."""
    gw = _gw(request)
    return [
        WebRtcSessionOut.model_validate(s.info())
        for s in gw.webrtc.sessions.values()
        if gw.zones.allows(consumer, s.channel)
    ]

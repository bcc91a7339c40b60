"""The WHEP sessions of one gateway: opening one per offer (stream, hub consumer, buffers,
tracks, aiortc peer connection, non-trickle answer), pumping units into its buffers, closing it
for any reason in one place, and ``gbgw_webrtc_*`` metrics. See the package docstring for the
rules."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.channels import Channel
from gateway.webrtc.offer import OfferInfo, WhepError, audio_plan, check_offer, video_plan
from gateway.webrtc.tracks import (
    AUDIO_MAX_UNITS,
    VIDEO_MAX_BYTES,
    VIDEO_MAX_UNITS,
    AudioTrack,
    UnitBuffer,
    VideoTrack,
)
from gateway.zones import Consumer
from media.codec_info import Codec
from media.hub import HubClosed
from media.ps import AccessUnit
from sip.errors import SipError

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.streams import LiveStream
    from media.hub import Consumer as HubConsumer

__all__ = ["RESULTS", "WebRtcMetrics", "WebRtcService", "WebRtcSession"]

log = logging.getLogger("gbgw.webrtc")

RESULTS = ("ok", "bad_offer", "unsupported", "busy", "failed")
"""``gbgw_webrtc_sessions_total{result}``: 201, 400, 415, 503, anything else."""
_RESULT_OF = {400: "bad_offer", 415: "unsupported", 503: "busy"}


class WebRtcMetrics:
    """``gbgw_webrtc_*`` on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Gauge(
            "gbgw_webrtc_sessions_active", "WebRTC (WHEP) sessions", registry=registry
        )
        self.transcodes = Gauge(
            "gbgw_webrtc_transcodes",
            "WebRTC sessions transcoding H.265 to H.264",
            registry=registry,
        )
        self.results = Counter(
            "gbgw_webrtc_sessions_total",
            "WHEP offers by result (ok, bad_offer, unsupported, busy, failed)",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.results.labels(result)


@dataclass(eq=False)
class WebRtcSession:
    """One WHEP viewer of one live stream."""

    session_id: str
    channel: Channel
    consumer: Consumer
    peer: str
    stream: LiveStream
    started_at: datetime
    codec: str
    audio_codec: str | None
    pc: RTCPeerConnection
    units: HubConsumer[AccessUnit]
    buffers: tuple[UnitBuffer, ...]
    tracks: tuple[MediaStreamTrack, ...]
    transcode: bool
    opened: float
    """``loop.time()`` of the offer."""
    pump: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    closed: bool = False

    def info(self) -> dict[str, object]:
        """The API view."""
        return {
            "session_id": self.session_id,
            "channel_id": self.channel.channel_id,
            "stream_id": self.stream.stream_id,
            "consumer": self.consumer.name,
            "peer": self.peer,
            "started_at": self.started_at,
            "codec": self.codec,
            "audio_codec": self.audio_codec,
            "state": "closed" if self.closed else self.pc.connectionState,
        }


def _field(value: str) -> str:
    """One ``k=v`` log field: no spaces, controls or '='."""
    return re.sub(r"[^\x21-\x7e]|=", "_", value)[:64] or "-"


class WebRtcService:
    """Every WHEP session of the gateway; see the module rules."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.config = gw.config.webrtc
        self.sessions: dict[str, WebRtcSession] = {}
        self.metrics = WebRtcMetrics(gw.metrics.registry)
        self._opening = 0
        self._transcodes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._saved_gather: Callable[[bool, bool], list[str]] | None = None
        self._gather: Callable[[bool, bool], list[str]] | None = None
        addresses = self.host_addresses()
        if addresses:
            self._install_gather(addresses)

    def host_addresses(self) -> tuple[str, ...]:
        """The ICE host addresses: configured, else ``media.advertise`` if it is a local IP,
        else () (aioice scans the interfaces)."""
        if self.config.host_addresses:
            return self.config.host_addresses
        advertise = self.gw.config.media.advertise
        if not advertise:
            return ()
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(advertise).version == 6 else 0
        except ValueError:
            return ()  # a host name: aioice binds addresses, not names
        with socket.socket(family or socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((advertise, 0))
            except OSError:
                log.warning("webrtc.advertise_not_local address=%s", advertise)
                return ()
        return (advertise,)

    def _install_gather(self, addresses: tuple[str, ...]) -> None:
        """Make aioice gather only ``addresses`` (its module function; process-wide)."""
        versions = {a: ipaddress.ip_address(a).version for a in addresses}

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return [a for a, v in versions.items() if (use_ipv4 if v == 4 else use_ipv6)]

        self._saved_gather = aioice.ice.get_host_addresses
        self._gather = get_host_addresses
        aioice.ice.get_host_addresses = get_host_addresses

    # -- opening ------------------------------------------------------------------------------

    async def create(
        self, channel_id: str, consumer: Consumer, offer_sdp: str, peer: str
    ) -> tuple[str, str]:
        """Answer a WHEP offer for the channel: (session_id, answer SDP with candidates)."""
        try:
            if len(self.sessions) + self._opening >= self.config.max_sessions:
                raise WhepError(
                    503, f"the gateway already has {self.config.max_sessions} WebRTC sessions"
                )
            offer = check_offer(offer_sdp)
            self._opening += 1
            try:
                session = await self._open(channel_id, consumer, offer, peer)
            finally:
                self._opening -= 1
        except (WhepError, SipError) as exc:
            ours = isinstance(exc, WhepError)
            result = _RESULT_OF.get(exc.status, "failed") if ours else "failed"
            self.metrics.results.labels(result).inc()
            log.info(
                "webrtc.rejected channel_id=%s consumer=%s peer=%s result=%s status=%s error=%s",
                _field(channel_id),
                _field(consumer.name),
                peer,
                result,
                exc.status,
                "whep" if ours else type(exc).__name__,
            )
            raise
        except Exception:
            self.metrics.results.labels("failed").inc()
            raise
        self.metrics.results.labels("ok").inc()
        return session.session_id, session.pc.localDescription.sdp

    async def _open(
        self, channel_id: str, consumer: Consumer, offer: OfferInfo, peer: str
    ) -> WebRtcSession:
        gw = self.gw
        stream = await gw.streams.open(channel_id, consumer, peer, action="webrtc")
        units: HubConsumer[AccessUnit] | None = None
        pc: RTCPeerConnection | None = None
        transcode = False
        try:
            transcode = video_plan(
                stream.hub.info().video_codec, self.config.max_transcodes, self._transcodes
            )
            if transcode:
                self._transcodes += 1
            try:
                units = stream.hub.subscribe_units()
            except HubClosed:
                raise WhepError(502, "the stream ended before the session started") from None
            first: list[AccessUnit] = []
            while (unit := units.get_nowait()) is not None:
                first.append(unit)
            audio_codec = self._audio_codec(stream, first)
            mime, decode = audio_plan(audio_codec, offer.audio)
            video = UnitBuffer(video=True, max_units=VIDEO_MAX_UNITS, max_bytes=VIDEO_MAX_BYTES)
            buffers = [video]
            tracks: list[MediaStreamTrack] = [VideoTrack(video, transcode)]
            servers = [RTCIceServer(urls=url) for url in self.config.stun_servers]
            pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
            t = pc.addTransceiver(tracks[0], direction="sendonly")
            t.setCodecPreferences(_capabilities("video", "video/h264"))
            if mime is not None or decode:
                audio = UnitBuffer(video=False, max_units=AUDIO_MAX_UNITS)
                buffers.append(audio)
                tracks.append(AudioTrack(audio, decode))
                t = pc.addTransceiver(tracks[1], direction="sendonly")
                if mime is not None:
                    t.setCodecPreferences(_capabilities("audio", mime.lower()))
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            except (ValueError, LookupError) as exc:
                raise WhepError(400, f"cannot answer the offer: {exc}") from None
            except Exception as exc:
                if type(exc).__module__.startswith("aiortc"):  # OperationError, InvalidState...
                    raise WhepError(400, f"cannot answer the offer: {exc}") from None
                raise
        except BaseException:
            if units is not None:
                units.close()
            if pc is not None:
                self._spawn(pc.close())
            if transcode:
                self._transcodes -= 1
            gw.streams.hold_until_idle(stream)
            raise
        loop = asyncio.get_running_loop()
        session = WebRtcSession(
            session_id=secrets.token_hex(8),
            channel=stream.channel,
            consumer=consumer,
            peer=peer,
            stream=stream,
            started_at=gw.clock(),
            codec="h265>h264" if transcode else "h264",
            audio_codec=str(audio_codec) if len(tracks) > 1 and audio_codec else None,
            pc=pc,
            units=units,
            buffers=tuple(buffers),
            tracks=tuple(tracks),
            transcode=transcode,
            opened=loop.time(),
        )
        self.sessions[session.session_id] = session
        pc.on("connectionstatechange", lambda: self._state_changed(session))
        session.timer = loop.call_later(
            self.config.connect_timeout, self.close, session.session_id, "connect_timeout"
        )
        session.pump = loop.create_task(
            self._pump(session, first), name=f"webrtc-{session.session_id}"
        )
        self._publish()
        log.info(
            "webrtc.session_started session_id=%s channel_id=%s stream_id=%s consumer=%s "
            "peer=%s codec=%s audio=%s",
            session.session_id,
            session.channel.channel_id,
            stream.stream_id,
            _field(consumer.name),
            peer,
            session.codec,
            session.audio_codec or "-",
        )
        return session

    @staticmethod
    def _audio_codec(stream: LiveStream, first: list[AccessUnit]) -> Codec | None:
        """The stream's audio codec: its PSM, what the hub has seen, or the cached GOP."""
        psm = stream.receiver.codecs[1] if stream.receiver is not None else None
        seen = next((u.codec for u in first if u.kind == "audio"), None)
        return psm or stream.hub.info().audio_codec or seen

    async def _pump(self, session: WebRtcSession, first: list[AccessUnit]) -> None:
        """Hub consumer -> track buffers, until the stream or the session ends."""
        video, audio = session.buffers[0], session.buffers[1:]

        def route(unit: AccessUnit) -> None:
            if unit.kind == "video":
                if unit.keyframe and audio and not audio[0].started:
                    audio[0].clear()  # audio starts with the video GOP a viewer will get
                video.put(unit)
            elif audio:
                audio[0].put(unit)

        try:
            for unit in first:
                route(unit)
            async for unit in session.units:
                route(unit)
        except Exception:
            log.exception("webrtc.pump_failed session_id=%s", session.session_id)
        self.close(session.session_id, f"stream_{session.units.close_reason or 'ended'}")

    def _state_changed(self, session: WebRtcSession) -> None:
        state = session.pc.connectionState
        if state == "connected":
            if session.timer is not None:
                session.timer.cancel()
                session.timer = None
            log.debug("webrtc.connected session_id=%s", session.session_id)
        elif state in ("failed", "closed"):
            self.close(session.session_id, f"peer_{state}")

    # -- closing ------------------------------------------------------------------------------

    def close(self, session_id: str, reason: str) -> bool:
        """End a session (idempotent); False when there is no such session."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.closed = True
        if session.timer is not None:
            session.timer.cancel()
        session.units.close()
        for buffer in session.buffers:
            buffer.close()
        for track in session.tracks:
            track.stop()
        if session.pump is not None and session.pump is not asyncio.current_task():
            session.pump.cancel()
        if session.transcode:
            self._transcodes -= 1
        self._spawn(session.pc.close())
        self._publish()
        loop = asyncio.get_running_loop()
        log.info(
            "webrtc.session_closed session_id=%s channel_id=%s consumer=%s peer=%s reason=%s "
            "seconds=%.1f dropped=%d",
            session_id,
            session.channel.channel_id,
            _field(session.consumer.name),
            session.peer,
            reason,
            loop.time() - session.opened,
            sum(b.dropped for b in session.buffers),
        )
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self) -> None:
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.transcodes.set(self._transcodes)

    async def close_all(self) -> None:
        """Shutdown: end every session and wait (bounded) for the peer connections to close."""
        for session_id in list(self.sessions):
            self.close(session_id, "shutdown")
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks, return_exceptions=True), timeout=5.0
                )
        if self._gather is not None and aioice.ice.get_host_addresses is self._gather:
            aioice.ice.get_host_addresses = self._saved_gather  # type: ignore[assignment]
        self._gather = None

    def info(self) -> list[dict[str, object]]:
        """Every session's API view."""
        return [s.info() for s in self.sessions.values()]


def _capabilities(kind: str, mime: str) -> list[RTCRtpCodecCapability]:
    """aiortc's send capabilities of one MIME type, plus RTX for video (codec preferences)."""
    return [
        c
        for c in RTCRtpSender.getCapabilities(kind).codecs
        if c.mimeType.lower() in (mime, "video/rtx")
    ]

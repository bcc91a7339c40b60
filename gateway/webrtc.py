"""WebRTC live view: WHEP (RFC 9725) sessions served by aiortc, one per viewer.

Rules:
- One POST, one answer: the offer carries the viewer's candidates and the answer carries all of
  ours (non-trickle), so ``create`` returns only after ICE gathering. Candidates are only the
  configured host addresses (``webrtc.host_addresses``, else ``media.advertise`` when it is a
  local IP, else aioice's own interface scan) and, if configured, STUN; never a default server.
- H.264 is never decoded: access units from the hub go to aiortc as ``av.Packet`` objects,
  which its sender packetizes (RFC 6184) without encoding. The first unit sent is a keyframe
  and every keyframe carries SPS and PPS (the last ones seen are prepended when missing).
  G.711 passes through the same way when the offer has the stream's law; any other audio codec
  of the offer gets decoded PCM that aiortc encodes. H.265 is decoded on a worker thread and
  aiortc's own H.264 encoder re-encodes it, under ``webrtc.max_transcodes``.
- Every buffer is bounded. The hub consumer is read at once by a pump task into one
  ``UnitBuffer`` per track. Before a track's sender first reads (ICE and DTLS still under way)
  a video buffer keeps only the latest GOP; a full video buffer drops units until the next
  keyframe, then starts over from it; a full audio buffer drops its oldest unit.
- A session ends on DELETE, a failed or closed peer connection, no connection within
  ``webrtc.connect_timeout`` seconds, or the end of the stream. Ending it closes its hub
  consumer, so the stream's idle timer sees one consumer fewer.

Errors: an offer the gateway cannot serve raises ``WhepError`` with an HTTP status (400 bad or
unusable SDP, 415 no H.264 in the offer or a channel codec it cannot send, 503 over a limit);
stream failures keep their ``SipError`` (403 zone, 404 channel, 502/504 device).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.channels import Channel
from gateway.zones import Consumer
from media.codec_info import Codec, iter_nals
from media.hub import HubClosed
from media.ps import AccessUnit
from sip.errors import SipError

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.streams import LiveStream
    from media.hub import Consumer as HubConsumer

__all__ = [
    "RESULTS",
    "UnitBuffer",
    "WebRtcMetrics",
    "WebRtcService",
    "WebRtcSession",
    "WhepError",
    "check_offer",
    "ensure_parameter_sets",
    "g711_decode",
    "video_plan",
]

log = logging.getLogger("gbgw.webrtc")

VIDEO_TIME_BASE = Fraction(1, 90000)
"""PES timestamps and H.264 RTP timestamps: 90 kHz ticks."""
PTS_MODULO = 1 << 33
MAX_PTS_JUMP = 10 * 90000
"""90 kHz ticks between consecutive units beyond which timestamps are discontinuous."""
MAX_OFFER_BYTES = 64 << 10
"""Largest SDP offer read from a request (a browser's is 4-8 KiB)."""
VIDEO_MAX_UNITS = 600
"""Video units one track buffers (24 s at 25 fps) before it skips to the next keyframe."""
VIDEO_MAX_BYTES = 16 << 20
AUDIO_MAX_UNITS = 256
"""Audio units one track buffers (10 s of 40 ms units) before it drops the oldest."""
RESULTS = ("ok", "bad_offer", "unsupported", "busy", "failed")
"""``gbgw_webrtc_sessions_total{result}``: 201, 400, 415, 503, anything else."""
_RESULT_OF = {400: "bad_offer", 415: "unsupported", 503: "busy"}
_G711 = {Codec.PCMA: "audio/PCMA", Codec.PCMU: "audio/PCMU"}
_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9
_START = b"\x00\x00\x00\x01"


class WhepError(Exception):
    """An offer this gateway cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# -- offers and decisions (pure) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferInfo:
    """What an offer asks for: one H.264 video m-line, maybe audio."""

    sdp: str
    audio: tuple[str, ...]
    """MIME types (``audio/pcma`` ...) of the first audio m-line that aiortc can send, in the
    offer's order; empty when the offer has no audio m-line that may receive."""


def check_offer(text: str) -> OfferInfo:
    """Validate a WHEP offer: 400 when it is not usable SDP, 415 when it has no H.264."""
    if not text.lstrip().startswith("v=0"):
        raise WhepError(400, "the body is not an SDP offer (it must start with v=0)")
    try:
        desc = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever a bad line trips over
        raise WhepError(400, f"malformed SDP offer: {type(exc).__name__} {exc}".strip()) from None
    video = [m for m in desc.media if m.kind == "video"]
    if not video:
        raise WhepError(400, "the offer has no video m-line")
    audio: tuple[str, ...] = ()
    seen_audio = False
    for media in desc.media:
        if media.kind not in ("audio", "video"):
            continue
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise WhepError(400, f"the {media.kind} m-line has no ICE ufrag/pwd")
        if media.dtls is None or not media.dtls.fingerprints:
            raise WhepError(400, f"the {media.kind} m-line has no DTLS fingerprint or setup")
        if not media.rtcp_mux:
            raise WhepError(400, f"the {media.kind} m-line lacks a=rtcp-mux")
        common = find_common_codecs(CODECS[media.kind], media.rtp.codecs)
        names = tuple(c.mimeType.lower() for c in common if c.name.lower() != "rtx")
        receives = (media.direction or "sendrecv") in ("recvonly", "sendrecv")
        if media is video[0]:
            if not receives:
                raise WhepError(400, "the offer's video m-line must be recvonly (or sendrecv)")
            if "video/h264" not in names:
                raise WhepError(
                    415,
                    "the offer has no usable H.264 (packetization-mode=1, baseline or "
                    "constrained baseline profile-level-id); this gateway sends only H.264",
                )
        elif media.kind == "audio" and not seen_audio:
            seen_audio = True
            if not names:
                raise WhepError(415, "the offer's audio m-line has no codec this gateway can send")
            audio = names if receives else ()
    return OfferInfo(text, audio)


def video_plan(codec: Codec | None, max_transcodes: int, transcodes: int) -> bool:
    """Whether the channel's video must be transcoded (H.265); WhepError 415/503 if it cannot
    be sent: another codec, transcoding disabled, or all transcoders busy."""
    if codec == Codec.H264:
        return False
    if codec == Codec.H265:
        if max_transcodes == 0:
            raise WhepError(415, "H.265 channel and transcoding is disabled")
        if transcodes >= max_transcodes:
            raise WhepError(
                503,
                f"H.265 channel: all {max_transcodes} transcoders are busy "
                "(webrtc.max_transcodes); try again later",
            )
        return True
    name = str(codec) if codec is not None else "unknown"
    raise WhepError(415, f"the channel's video is {name}; WebRTC here carries H.264 and H.265")


def audio_plan(codec: Codec | None, offered: tuple[str, ...]) -> tuple[str | None, bool]:
    """(MIME type to prefer, whether to decode to PCM) for the stream's audio codec against the
    offer's audio codecs; (None, False) when no audio track is sent."""
    mime = _G711.get(codec) if codec is not None else None
    if mime is None or not offered:
        return None, False
    if mime.lower() in offered:
        return mime, False
    return None, True  # aiortc encodes the PCM to the offer's first codec (e.g. opus)


# -- media transforms (pure) ----------------------------------------------------------------


@dataclass(slots=True)
class ParameterSets:
    """The last H.264 SPS and PPS seen in a stream (NAL bytes, no start code)."""

    sps: bytes | None = None
    pps: bytes | None = None


def ensure_parameter_sets(data: bytes, keyframe: bool, sets: ParameterSets) -> bytes:
    """An H.264 access unit (Annex B) whose keyframe carries SPS and PPS: the last ones seen
    are put before it when it lacks them (after its AUD, H.264 §7.4.1.2.3). Remembers the
    unit's own parameter sets; returns ``data`` itself when nothing is missing."""
    has_sps = has_pps = False
    find, n = data.find, len(data)
    pos = find(b"\x00\x00\x01")
    while 0 <= pos < n - 3:  # NAL headers up to the first slice; only SPS/PPS are copied
        kind = data[pos + 3] & 0x1F
        if 1 <= kind <= 5:
            break
        nxt = find(b"\x00\x00\x01", pos + 3)
        if kind in (_NAL_SPS, _NAL_PPS):
            nal = data[pos + 3 : n if nxt < 0 else nxt].rstrip(b"\x00")
            if kind == _NAL_SPS:
                sets.sps, has_sps = nal, True
            else:
                sets.pps, has_pps = nal, True
        pos = nxt
    missing = [ps for ps, has in ((sets.sps, has_sps), (sets.pps, has_pps)) if not has and ps]
    if not keyframe or not missing:
        return data
    nals = list(iter_nals(data))
    lead = 1 if nals and nals[0][0] & 0x1F == _NAL_AUD else 0
    return b"".join(_START + nal for nal in [*nals[:lead], *missing, *nals[lead:]])


def _g711_tables() -> dict[Codec, np.ndarray[Any, np.dtype[np.int16]]]:
    """ITU-T G.711 expansion, one int16 per code byte: A-law (even bits inverted, sign bit
    set = positive) and µ-law (all bits inverted, bias 0x84)."""
    alaw = np.zeros(256, dtype=np.int16)
    ulaw = np.zeros(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55
        exponent, mantissa = (a >> 4) & 7, a & 0x0F
        magnitude = (
            (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
        )
        alaw[code] = magnitude if a & 0x80 else -magnitude
        u = ~code & 0xFF
        exponent, mantissa = (u >> 4) & 7, u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        ulaw[code] = -magnitude if u & 0x80 else magnitude
    return {Codec.PCMA: alaw, Codec.PCMU: ulaw}


_G711_TABLES = _g711_tables()


def g711_decode(codec: Codec, data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    """8 kHz G.711 bytes (A-law or µ-law) -> int16 PCM samples, one per byte."""
    return _G711_TABLES[codec][np.frombuffer(data, dtype=np.uint8)]


class PtsLine:
    """33-bit 90 kHz PES timestamps unwrapped onto a continuous integer line. A jump of more
    than ``MAX_PTS_JUMP`` (an encoder restart) advances the line by the last normal step, so
    the viewer's RTP clock never leaps."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0
        self._step = 3600  # ticks: one 25 fps frame until a real step is seen

    def __call__(self, pts: int | None) -> int:
        """Ticks for ``pts`` (None: the previous value), following wraps both ways."""
        if pts is None:
            return self._value
        if self._last is None:
            self._value = pts
        else:
            delta = (pts - self._last) % PTS_MODULO
            if delta >= PTS_MODULO // 2:
                delta -= PTS_MODULO
            if abs(delta) > MAX_PTS_JUMP:
                delta = self._step
            elif delta > 0:
                self._step = delta
            self._value += delta
        self._last = pts
        return self._value


def _packet(data: bytes, pts: int) -> av.Packet[Any]:
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = VIDEO_TIME_BASE
    return packet


class UnitBuffer:
    """Access units for one track, bounded, with the overflow policy of the module rules."""

    def __init__(self, *, video: bool, max_units: int, max_bytes: int = 1 << 62) -> None:
        self.video = video
        self.max_units = max_units
        self.max_bytes = max_bytes
        self.started = False
        """The track's sender has read once (ICE and DTLS are up)."""
        self.dropped = 0
        self._queue: deque[AccessUnit] = deque()
        self._bytes = 0
        self._skipping = video  # video starts at a keyframe
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, unit: AccessUnit) -> None:
        """Queue a unit (or drop it, as the rules say)."""
        if self._closed:
            return
        queue = self._queue
        if self.video:
            full = len(queue) >= self.max_units or self._bytes + len(unit.data) > self.max_bytes
            if unit.keyframe and (self._skipping or full or not self.started):
                self.dropped += len(queue)
                self.clear()
                self._skipping = False
            elif self._skipping or full:
                self._skipping = True
                self.dropped += 1
                return
        elif len(queue) >= self.max_units:
            self._bytes -= len(queue.popleft().data)
            self.dropped += 1
        queue.append(unit)
        self._bytes += len(unit.data)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        """Drop every queued unit."""
        self._queue.clear()
        self._bytes = 0

    async def get(self) -> AccessUnit:
        """The next unit; MediaStreamError once closed (queued units are dropped)."""
        self.started = True
        while not self._queue:
            if self._closed:
                raise MediaStreamError("session ended")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._closed:
            raise MediaStreamError("session ended")
        unit = self._queue.popleft()
        self._bytes -= len(unit.data)
        return unit

    def close(self) -> None:
        """End the buffer: readers get MediaStreamError."""
        self._closed = True
        self.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


# -- tracks ---------------------------------------------------------------------------------


class _HevcDecoder:
    """H.265 access units -> yuv420p frames; runs on a worker thread, one call at a time."""

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("hevc", "r")

    def decode(self, data: bytes, pts: int, dts: int) -> list[av.VideoFrame]:
        packet = _packet(data, pts)
        packet.dts = dts
        try:
            frames = self._ctx.decode(packet)
        except av.FFmpegError as exc:
            log.debug("webrtc.decode_error error=%s", type(exc).__name__)
            return []
        out: list[av.VideoFrame] = []
        for frame in frames:
            if not isinstance(frame, av.VideoFrame):
                continue
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            frame.pts = frame.pts if frame.pts is not None else pts
            frame.time_base = VIDEO_TIME_BASE
            out.append(frame)
        return out


class VideoTrack(MediaStreamTrack):
    """The viewer's video: H.264 packets as they come, or frames decoded from H.265."""

    kind = "video"

    def __init__(self, buffer: UnitBuffer, transcode: bool) -> None:
        super().__init__()
        self.buffer = buffer
        self._decoder = _HevcDecoder() if transcode else None
        self._sets = ParameterSets()
        self._pts = PtsLine()
        self._dts = PtsLine()
        self._frames: deque[av.VideoFrame] = deque()

    async def recv(self) -> av.Packet[Any] | av.VideoFrame:
        while True:
            if self._frames:
                return self._frames.popleft()
            unit = await self.buffer.get()
            pts = self._pts(unit.pts if unit.pts is not None else unit.dts)
            if self._decoder is None:
                return _packet(ensure_parameter_sets(unit.data, unit.keyframe, self._sets), pts)
            dts = self._dts(unit.dts if unit.dts is not None else unit.pts)
            frames = await asyncio.to_thread(self._decoder.decode, unit.data, pts, dts)
            if self.readyState == "ended":
                raise MediaStreamError("session ended")
            self._frames.extend(frames)


class AudioTrack(MediaStreamTrack):
    """The viewer's audio: G.711 packets as they come, or PCM frames for aiortc to encode."""

    kind = "audio"

    def __init__(self, buffer: UnitBuffer, decode: bool) -> None:
        super().__init__()
        self.buffer = buffer
        self._decode = decode
        self._pts = PtsLine()

    async def recv(self) -> av.Packet[Any] | av.AudioFrame:
        while True:
            unit = await self.buffer.get()
            if not unit.data or unit.codec not in _G711:
                continue
            pts = self._pts(unit.pts if unit.pts is not None else unit.dts)
            if not self._decode:
                return _packet(unit.data, pts)
            samples = g711_decode(unit.codec, unit.data)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 8000
            frame.pts = pts * 8000 // 90000
            frame.time_base = Fraction(1, 8000)
            return frame


# -- sessions -------------------------------------------------------------------------------


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
        if logging.getLogger("aioice").level == logging.NOTSET:
            logging.getLogger("aioice").setLevel(logging.WARNING)  # per-check lines at INFO
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

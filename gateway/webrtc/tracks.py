"""What one viewer's tracks send: H.264 access units as ``av.Packet`` objects (keyframes with
SPS and PPS), H.265 decoded on a worker thread for aiortc to re-encode, G.711 as packets or PCM,
all read from a bounded ``UnitBuffer`` per track on a continuous 90 kHz timestamp line."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.codec_info import Codec, iter_nals
from media.ps import AccessUnit

__all__ = [
    "AUDIO_MAX_UNITS",
    "VIDEO_MAX_BYTES",
    "VIDEO_MAX_UNITS",
    "AudioTrack",
    "ParameterSets",
    "PtsLine",
    "UnitBuffer",
    "VideoTrack",
    "ensure_parameter_sets",
    "g711_decode",
]

log = logging.getLogger("gbgw.webrtc")

VIDEO_TIME_BASE = Fraction(1, 90000)
"""PES timestamps and H.264 RTP timestamps: 90 kHz ticks."""
PTS_MODULO = 1 << 33
MAX_PTS_JUMP = 10 * 90000
"""90 kHz ticks between consecutive units beyond which timestamps are discontinuous."""
VIDEO_MAX_UNITS = 600
"""Video units one track buffers (24 s at 25 fps) before it skips to the next keyframe."""
VIDEO_MAX_BYTES = 16 << 20
AUDIO_MAX_UNITS = 256
"""Audio units one track buffers (10 s of 40 ms units) before it drops the oldest."""
_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9
_START = b"\x00\x00\x00\x01"


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
            if not unit.data or unit.codec not in _G711_TABLES:
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

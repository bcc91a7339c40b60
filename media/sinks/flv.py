"""HTTP-FLV muxer: access units in, FLV tags out (Adobe FLV spec v10.1 Annex E, Enhanced RTMP).

Rules:
1. Nothing is written before the first video keyframe whose parameter sets give a decoder
   configuration; audio before it is dropped too. That keyframe's tag is at 0 ms. A muxer
   without video starts at its first audio unit.
2. Parameter sets travel only in sequence-header tags: SPS/PPS (and VPS) and access unit
   delimiters are dropped from frame payloads, which are NAL units with 4-byte big-endian
   lengths. A unit carrying parameter sets that differ from the current ones gets a new
   sequence header in front of its frame, and that header replaces the one in ``header()``.
   (So the configuration is always complete, as ``hvc1``/``avc1`` players expect.)
3. Tag timestamps are milliseconds of DTS since rule 1's first tag, unwrapped across the
   33-bit wrap; a jump over ``MAX_JUMP`` ticks either way is a discontinuity and the clock
   carries on from its last value. Composition time is (PTS - DTS) in ms, 0 without B-frames.
4. ``header()`` = FLV header + PreviousTagSize0 + onMetaData + video sequence header + audio
   sequence header, the last three once known. They are also returned in-band by the
   ``mux()`` call that creates them, so a consumer that took ``header()`` earlier gets them.
5. Units of another codec than the muxer was built for are dropped (the hub builds a new
   muxer when a stream changes codec).

H.265 comes in two layouts: ``codec12``, the legacy CodecID 12 with an AVC-style packet
(packet type, composition time, hvcC / NAL units) used by Chinese CDNs, which mpegts.js
(xqq/mpegts.js#68) and flv.js forks read; and ``enhanced``, Enhanced RTMP's ExVideoTagHeader
with FourCC ``hvc1`` (SequenceStart, then CodedFrames), read by mpegts.js (#100). The FFmpeg
in PyAV's wheels (libavformat 62) reads both layouts; Debian's FFmpeg 5.1 reads neither.

Audio: G.711 A-law is SoundFormat 7, µ-law 8, flagged as FFmpeg writes them (rate bits 0,
16-bit, mono; 8 kHz is implied); AAC is SoundFormat 10 with an AudioSpecificConfig built from
the ADTS header, one tag per ADTS frame.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

from media.codec_info import Codec, SpsParseError, parse_h264_sps, parse_h265_sps
from media.ps import AccessUnit
from media.sinks._base import UnsupportedCodec
from media.sinks._config import (
    ConfigError,
    annexb_spans,
    audio_specific_config,
    avc_config,
    hevc_config,
    parse_adts,
)

__all__ = ["MAX_JUMP", "FlvMuxer", "HevcMode"]

HevcMode = Literal["codec12", "enhanced"]

MAX_JUMP: Final = 10 * 90000
"""90 kHz ticks; a larger timestamp step between two units is a discontinuity (rule 3)."""

_MASK33 = (1 << 33) - 1
_HALF33 = 1 << 32
_TAG_HEAD = struct.Struct(">IIBH")  # type+size, timestamp+extended, stream id (3 bytes)
_U32 = struct.Struct(">I")
_AUDIO, _VIDEO, _SCRIPT = 8, 9, 18
_KEY, _INTER = 1, 2
_HVC1 = b"hvc1"
_AUDIO_FLAGS = {Codec.PCMA: 0x72, Codec.PCMU: 0x82, Codec.AAC: 0xAF}
_AUDIO_IDS = {Codec.PCMA: 7, Codec.PCMU: 8, Codec.AAC: 10}
# NAL types: parameter sets kept for the sequence header, and the access unit delimiter.
_H264_PARAMS = (7, 8)
_H265_PARAMS = (32, 33, 34)


def _tag_head(tag_type: int, ms: int, size: int) -> bytes:
    """The 11-byte tag header; ``ms`` is wrapped to the 32-bit FLV clock."""
    ms &= 0xFFFFFFFF
    return _TAG_HEAD.pack(tag_type << 24 | size, (ms & 0xFFFFFF) << 8 | ms >> 24, 0, 0)


def _tag(tag_type: int, ms: int, body: list[bytes]) -> bytes:
    """One FLV tag and its PreviousTagSize."""
    size = sum(map(len, body))
    return b"".join((_tag_head(tag_type, ms, size), *body, _U32.pack(11 + size)))


def _amf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _script_tag(fields: dict[str, float | bool | str]) -> bytes:
    """onMetaData as an AMF0 ECMA array (FLV spec Annex E.4.4, AMF0 §2.10)."""
    body = bytearray(b"\x02" + _amf_string("onMetaData") + b"\x08")
    body += struct.pack(">I", len(fields))
    for key, value in fields.items():
        body += _amf_string(key)
        if isinstance(value, bool):
            body += bytes((1, value))
        elif isinstance(value, str):
            body += b"\x02" + _amf_string(value)
        else:
            body += b"\x00" + struct.pack(">d", value)
    body += b"\x00\x00\x09"  # object end marker
    return _tag(_SCRIPT, 0, [bytes(body)])


class FlvMuxer:
    """FLV tags for H.264/H.265 video and G.711/AAC audio; see the module rules."""

    content_type = "video/x-flv"

    def __init__(
        self,
        video_codec: Codec | None,
        audio_codec: Codec | None = None,
        *,
        hevc_mode: HevcMode = "codec12",
        framerate: float | None = None,
    ) -> None:
        if video_codec not in (None, Codec.H264, Codec.H265):
            raise UnsupportedCodec(f"FLV cannot carry video codec {video_codec}")
        if hevc_mode not in ("codec12", "enhanced"):
            raise ValueError(f"hevc_mode must be 'codec12' or 'enhanced', not {hevc_mode!r}")
        if audio_codec is not None and audio_codec not in _AUDIO_FLAGS:
            raise UnsupportedCodec(f"FLV cannot carry audio codec {audio_codec}")
        if video_codec is None and audio_codec is None:
            raise ValueError("an FLV muxer needs a video or an audio codec")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.hevc_mode: HevcMode = hevc_mode
        self.framerate = framerate
        """Frames per second for onMetaData, when the caller knows it."""
        self._h265 = video_codec == Codec.H265
        self._enhanced = self._h265 and hevc_mode == "enhanced"
        self._codec_id = 12 if self._h265 else 7
        self._param_types = _H265_PARAMS if self._h265 else _H264_PARAMS
        flags = (4 if audio_codec is not None else 0) | (1 if video_codec is not None else 0)
        self._file_header = b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09\x00\x00\x00\x00"
        self._meta = b""
        self._video_cfg = b""
        self._audio_cfg = b""
        self._header = self._file_header
        self._params: dict[int, tuple[bytes, ...]] = {}
        self._size: tuple[int, int] | None = None
        self._asc = b""
        self._aac_rate = 0
        self._aac_channels = 0
        self._started = False
        self._last_raw: int | None = None  # 33-bit time of the last unit clocked
        self._ext = 0  # 90 kHz ticks since the first tag, unwrapped
        if video_codec is None and audio_codec != Codec.AAC:
            self._start_audio_only()

    # -- public

    def header(self) -> bytes:
        """FLV header + PreviousTagSize0 (+ onMetaData and sequence headers once known)."""
        return self._header

    def mux(self, unit: AccessUnit) -> bytes:
        """The tag(s) for ``unit``, with any new sequence header first; b"" if dropped."""
        if unit.kind == "video":
            if unit.codec != self.video_codec or self.video_codec is None:
                return b""
            return self._mux_video(unit)
        if unit.codec != self.audio_codec or self.audio_codec is None:
            return b""
        if not self._started:
            if self.video_codec is not None:
                return b""
            self._started = True  # audio-only AAC: rule 1
        return self._mux_audio(unit)

    # -- video

    def _mux_video(self, unit: AccessUnit) -> bytes:
        data = unit.data
        params = self._param_types
        h265 = self._h265
        aud = 35 if h265 else 9
        view = memoryview(data)  # NAL payloads are joined once, straight from the unit
        body: list[bytes | memoryview] = []
        found: dict[int, list[bytes]] | None = None
        pack = _U32.pack
        for begin, end in annexb_spans(data):
            t = (data[begin] >> 1) & 0x3F if h265 else data[begin] & 0x1F
            if t in params:
                if found is None:
                    found = {}
                found.setdefault(t, []).append(data[begin:end])
            elif t != aud:
                body.append(pack(end - begin))
                body.append(view[begin:end])
        out: list[bytes] = []
        if found is not None:
            config = self._update_params(found, unit)
            if config:
                out.append(config)
        if not self._started:
            if not (unit.keyframe and self._video_cfg and body):
                return b""
            self._started = True
            self._meta = self._metadata()
            self._header = self._file_header + self._meta + self._video_cfg
            out = [self._meta, self._video_cfg]
        if not body:
            return b"".join(out)
        dts = self._clock(unit)
        cts = 0
        if unit.pts is not None and unit.dts is not None and unit.pts != unit.dts:
            delta = (unit.pts - unit.dts) & _MASK33
            cts = ((delta - (1 << 33) if delta >= _HALF33 else delta) // 90) & 0xFFFFFF
        frame = _KEY if unit.keyframe else _INTER
        if self._enhanced:
            # PacketTypeCodedFrames (1), not CodedFramesX (3), even with a zero composition
            # time: a pre-Enhanced reader takes the low nibble for a CodecID, and 3 (Screen
            # video) makes FFmpeg 5.1's flashsv decoder crash, where 1 (JPEG) is refused.
            prefix = bytes((0x81 | frame << 4,)) + _HVC1 + cts.to_bytes(3, "big")
        else:
            prefix = bytes((frame << 4 | self._codec_id, 1)) + cts.to_bytes(3, "big")
        size = len(prefix) + sum(map(len, body))
        out.append(_tag_head(_VIDEO, max(dts, 0) // 90, size))
        out.append(prefix)
        return b"".join((*out, *body, _U32.pack(11 + size)))

    def _update_params(self, found: dict[int, list[bytes]], unit: AccessUnit) -> bytes:
        """Rule 2: a new sequence header tag if the parameter sets changed, else b""."""
        merged = dict(self._params)
        for t, nals in found.items():
            merged[t] = tuple(nals)
        if merged == self._params:
            return b""
        try:
            if self._h265:
                config = hevc_config(merged.get(32, ()), merged.get(33, ()), merged.get(34, ()))
                self._size = parse_h265_sps(merged[33][0])
            else:
                config = avc_config(merged.get(7, ()), merged.get(8, ()))
                self._size = parse_h264_sps(merged[7][0])
        except (ConfigError, SpsParseError):
            return b""  # keep the previous configuration (or none yet: rule 1 waits)
        self._params = merged
        if self._enhanced:  # PacketTypeSequenceStart
            body = [bytes((0x80 | _KEY << 4,)) + _HVC1, config]
        else:  # AVCPacketType 0: sequence header
            body = [bytes((_KEY << 4 | self._codec_id, 0, 0, 0, 0)), config]
        ms = max(self._peek(unit), 0) // 90 if self._started else 0
        self._video_cfg = _tag(_VIDEO, ms, body)
        if not self._started:
            return b""  # rule 1: header() and the first keyframe's output get it
        self._rebuild_header()
        return self._video_cfg

    # -- audio

    def _mux_audio(self, unit: AccessUnit) -> bytes:
        ticks = self._clock(unit)
        if ticks < 0:
            return b""  # audio from before the first keyframe (rule 1)
        flags = _AUDIO_FLAGS[unit.codec]
        if unit.codec != Codec.AAC:
            return _tag(_AUDIO, ticks // 90, [bytes((flags,)), unit.data])
        data = unit.data
        out = []
        pos = 0
        frames = 0
        while pos < len(data):
            try:
                h = parse_adts(data, pos)
            except ConfigError:
                break  # the rest of the unit is not ADTS; drop it
            asc = audio_specific_config(h)
            if asc != self._asc:
                self._asc = asc
                self._aac_rate = h.sample_rate
                self._aac_channels = h.channels
                self._audio_cfg = _tag(_AUDIO, ticks // 90, [b"\xaf\x00", asc])
                if not self._meta:
                    self._meta = self._metadata()
                    out.append(self._meta)
                self._rebuild_header()
                out.append(self._audio_cfg)
            ms = (ticks + frames * 1024 * 90000 // h.sample_rate) // 90
            out.append(
                _tag(_AUDIO, ms, [b"\xaf\x01", data[pos + h.header_size : pos + h.frame_size]])
            )
            pos += h.frame_size
            frames += 1
        return b"".join(out)

    def _start_audio_only(self) -> None:
        self._started = True
        self._meta = self._metadata()
        self._rebuild_header()

    # -- shared

    def _rebuild_header(self) -> None:
        self._header = self._file_header + self._meta + self._video_cfg + self._audio_cfg

    def _metadata(self) -> bytes:
        fields: dict[str, float | bool | str] = {"duration": 0.0}
        if self.video_codec is not None:
            if self._size is not None:
                fields["width"] = float(self._size[0])
                fields["height"] = float(self._size[1])
            if self.framerate:
                fields["framerate"] = float(self.framerate)
            # Enhanced RTMP: videocodecid holds the FourCC as a number.
            vid = int.from_bytes(_HVC1, "big") if self._enhanced else self._codec_id
            fields["videocodecid"] = float(vid)
        if self.audio_codec is not None:
            fields["audiocodecid"] = float(_AUDIO_IDS[self.audio_codec])
            if self.audio_codec == Codec.AAC:
                if self._aac_rate:
                    fields["audiosamplerate"] = float(self._aac_rate)
                    fields["stereo"] = self._aac_channels > 1
            else:
                fields["audiosamplerate"] = 8000.0
                fields["stereo"] = False
            fields["audiosamplesize"] = 16.0
        fields["encoder"] = "gbgw"
        return _script_tag(fields)

    def _peek(self, unit: AccessUnit) -> int:
        """The unwrapped time of ``unit`` without moving the clock (90 kHz ticks)."""
        if self._last_raw is None:
            return 0
        delta = (_time(unit) - self._last_raw) & _MASK33
        if delta >= _HALF33:
            delta -= 1 << 33
        return self._ext + (delta if -MAX_JUMP <= delta <= MAX_JUMP else 0)

    def _clock(self, unit: AccessUnit) -> int:
        """Rule 3: the unit's DTS in 90 kHz ticks since the first tag (may be negative)."""
        last = self._last_raw
        if last is None:
            self._last_raw = _time(unit)
            return 0
        raw = _time(unit) if unit.pts is not None or unit.dts is not None else last
        delta = (raw - last) & _MASK33
        if delta >= _HALF33:
            delta -= 1 << 33
        if -MAX_JUMP <= delta <= MAX_JUMP:
            self._ext += delta
        self._last_raw = raw
        return self._ext


def _time(unit: AccessUnit) -> int:
    """Decode time in 90 kHz ticks: DTS, else PTS, else 0."""
    if unit.dts is not None:
        return unit.dts
    return unit.pts if unit.pts is not None else 0

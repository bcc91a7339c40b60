"""GB/T 28181-style MPEG-PS muxer (ISO/IEC 13818-1 §2.5, PROTOCOL §5.2).

Layout, the way cameras and NVRs write it: one pack per access unit. A video pack is
``pack header [system header + PSM before a keyframe] PES E0...`` with the frame split into
PES packets of at most 65535 bytes, the first carrying the PTS (and DTS when it differs). An
audio pack is ``pack header PES C0``. The system header and PSM are also written before the
first unit and whenever a codec changes, so a reader always meets the PSM before the stream.
"""

from __future__ import annotations

import struct

from media.codec_info import Codec
from media.ps._units import (
    AUDIO_CODECS,
    CODEC_STREAM_TYPE,
    PTS_MODULO,
    VIDEO_CODECS,
    AccessUnit,
)

__all__ = ["AUDIO_STREAM_ID", "END_CODE", "VIDEO_STREAM_ID", "PsMuxer", "crc32_mpeg2"]

VIDEO_STREAM_ID = 0xE0
AUDIO_STREAM_ID = 0xC0
END_CODE = b"\x00\x00\x01\xb9"
"""MPEG program end code."""
_MAX_PES_LENGTH = 0xFFFF
_SCR_LEAD = 3600  # 40 ms, 90 kHz ticks: the SCR precedes the first decode time
_MASK33 = PTS_MODULO - 1


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, init 0xFFFFFFFF, no reflection, no final xor)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ b]
    return crc


def _timestamp(prefix: int, ticks: int) -> bytes:
    """5-byte PTS/DTS field: ``prefix`` nibble, 33-bit value with marker bits (§2.4.3.7)."""
    t = ticks & _MASK33
    return bytes(
        (
            prefix << 4 | (t >> 29) & 0x0E | 1,
            (t >> 22) & 0xFF,
            (t >> 14) & 0xFE | 1,
            (t >> 7) & 0xFF,
            (t << 1) & 0xFE | 1,
        )
    )


def _pack_header(scr: int, mux_rate: int) -> bytes:
    """14-byte MPEG-2 pack header, SCR base in 90 kHz ticks, extension 0, no stuffing."""
    s = scr & _MASK33
    rate = (mux_rate << 2) | 0x03
    return b"\x00\x00\x01\xba" + bytes(
        (
            0x44 | (s >> 27) & 0x38 | (s >> 28) & 0x03,
            (s >> 20) & 0xFF,
            (s >> 12) & 0xF8 | 0x04 | (s >> 13) & 0x03,
            (s >> 5) & 0xFF,
            (s << 3) & 0xF8 | 0x04,
            0x01,
            (rate >> 16) & 0xFF,
            (rate >> 8) & 0xFF,
            rate & 0xFF,
            0xF8,
        )
    )


class PsMuxer:
    """Access units in, GB-style PS bytes out: one ``mux()`` call gives one whole pack."""

    def __init__(
        self,
        *,
        video_codec: Codec | None = None,
        audio_codec: Codec | None = None,
        mux_rate: int = 25000,
    ) -> None:
        if not 1 <= mux_rate < 1 << 22:
            raise ValueError(f"mux_rate {mux_rate} (50 B/s units) is not a 22-bit value")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.mux_rate = mux_rate
        self._psm_version = 0
        self._psm_due = True
        self._psm_written = False

    def mux(self, unit: AccessUnit) -> bytes:
        """One pack for ``unit``: video as PES 0xE0, audio as PES 0xC0."""
        if unit.kind == "video":
            if unit.codec != self.video_codec:
                self.video_codec = unit.codec
                self._psm_changed()
            sid = VIDEO_STREAM_ID
        else:
            if unit.codec != self.audio_codec:
                self.audio_codec = unit.codec
                self._psm_changed()
            sid = AUDIO_STREAM_ID
        when = unit.dts if unit.dts is not None else unit.pts
        parts = [_pack_header(max(0, (when or 0) - _SCR_LEAD), self.mux_rate)]
        if self._psm_due or (unit.kind == "video" and unit.keyframe):
            parts.append(self.system_header())
            parts.append(self.program_stream_map())
            self._psm_due = False
            self._psm_written = True
        parts.extend(self._pes(sid, unit))
        return b"".join(parts)

    def end(self) -> bytes:
        """The program end code, written once at the end of a file."""
        return END_CODE

    def system_header(self) -> bytes:
        """System header (0xBB) for the streams known now."""
        rate_bound = (1 << 23) | (self.mux_rate << 1) | 1
        audio = self.audio_codec is not None
        body = bytearray(rate_bound.to_bytes(3, "big"))
        body.append((1 if audio else 0) << 2)  # audio_bound, fixed_flag 0, CSPS_flag 0
        body.append(0xE1)  # audio/video lock, marker, video_bound 1
        body.append(0x7F)  # packet_rate_restriction 0, reserved
        body += bytes((VIDEO_STREAM_ID, 0xE4, 0x00))  # P-STD: scale 1024 B, 1024 -> 1 MiB
        if audio:
            body += bytes((AUDIO_STREAM_ID, 0xC0, 0x20))  # scale 128 B, 32 -> 4 KiB
        return b"\x00\x00\x01\xbb" + struct.pack(">H", len(body)) + bytes(body)

    def program_stream_map(self) -> bytes:
        """PSM (0xBC) mapping 0xE0/0xC0 to the current codecs, with its CRC-32/MPEG-2."""
        entries = bytearray()
        video = self.video_codec
        if video is not None and video in VIDEO_CODECS:
            entries += bytes((CODEC_STREAM_TYPE[video], VIDEO_STREAM_ID, 0, 0))
        audio = self.audio_codec
        if audio is not None and audio in AUDIO_CODECS:
            entries += bytes((CODEC_STREAM_TYPE[audio], AUDIO_STREAM_ID, 0, 0))
        body = bytes((0xE0 | self._psm_version, 0xFF, 0, 0)) + struct.pack(">H", len(entries))
        head = b"\x00\x00\x01\xbc" + struct.pack(">H", len(body) + len(entries) + 4)
        psm = head + body + bytes(entries)
        return psm + struct.pack(">I", crc32_mpeg2(psm))

    def _psm_changed(self) -> None:
        if self._psm_written:  # ISO/IEC 13818-1 §2.5.4.2: the version counts changes
            self._psm_version = (self._psm_version + 1) & 0x1F
        self._psm_due = True

    def _pes(self, sid: int, unit: AccessUnit) -> list[bytes]:
        data = unit.data
        if unit.pts is None:
            header = b"\x80\x00\x00"
        elif unit.dts is None or unit.dts == unit.pts:
            header = b"\x84\x80\x05" + _timestamp(0x2, unit.pts)
        else:
            header = b"\x84\xc0\x0a" + _timestamp(0x3, unit.pts) + _timestamp(0x1, unit.dts)
        out = []
        pos = 0
        while True:
            room = _MAX_PES_LENGTH - len(header)
            chunk = data[pos : pos + room]
            pos += len(chunk)
            out.append(
                b"\x00\x00\x01"
                + bytes((sid,))
                + struct.pack(">H", len(header) + len(chunk))
                + header
                + chunk
            )
            if pos >= len(data):
                return out
            header = b"\x80\x00\x00"  # continuation PES: no timestamps, appended by readers

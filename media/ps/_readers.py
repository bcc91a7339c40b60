"""Byte-level PS syntax readers (ISO/IEC 13818-1 §2.5) and the demuxer's fault counters.

The readers work on the demuxer's buffer in place (offsets, no copies) and raise
``PsDemuxError`` naming the fault kind; ``PsDemuxer`` catches them in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from media.ps._units import PsDemuxError

__all__ = [
    "FAULT_KINDS",
    "PsDemuxStats",
    "find_ps_start",
    "parse_pes_header",
    "parse_psm",
    "read_timestamp",
]

START_CODE = b"\x00\x00\x01"

FAULT_KINDS = (
    "garbage",
    "truncated",
    "oversize",
    "no_psm",
    "bad_pes",
    "bad_psm",
    "bad_pack",
    "loss",
    "overflow",
    "mpeg_ts",
)


@dataclass(slots=True)
class PsDemuxStats:
    """Counters of one demuxer. Fault kinds (``FAULT_KINDS``) feed
    ``gbgw_media_faults_total{kind}``; the rest describe the stream."""

    packs: int = 0
    psm: int = 0
    video_units: int = 0
    audio_units: int = 0
    skipped_packets: int = 0
    """System headers, 0xBD/0xBE/0xBF and other stream ids, skipped by length."""
    other_stream: int = 0
    """PES of a second video or audio stream id, skipped."""
    garbage: int = 0
    """Runs of bytes between structures that are no PS structure."""
    garbage_bytes: int = 0
    truncated: int = 0
    """Packets cut short by the next pack header, or left incomplete at ``flush()``."""
    oversize: int = 0
    """Frames dropped for exceeding ``max_frame`` bytes."""
    no_psm: int = 0
    """Keyframes (and the first frame) whose codec came from sniffing, not from a PSM."""
    bad_pes: int = 0
    bad_psm: int = 0
    bad_pack: int = 0
    """Pack headers that are MPEG-1 (``0010xxxx``) or otherwise not MPEG-2."""
    loss: int = 0
    """``notify_loss()`` calls (RTP gaps)."""
    overflow: int = 0
    mpeg_ts: int = 0
    """Payloads that look like MPEG-TS (0x47 every 188 bytes) before any pack header."""
    marker_frames: int = 0
    """Video frames closed by the RTP marker bit instead of the next pack header."""
    marker_distrusted: int = 0
    """1 once the marker bit was seen mid-frame: frames then end at pack headers only."""

    def faults(self) -> dict[str, int]:
        """The fault counters by kind."""
        return {kind: getattr(self, kind) for kind in FAULT_KINDS}

    def as_dict(self) -> dict[str, int]:
        """All counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def read_timestamp(buf: bytearray, p: int) -> int:
    """A 33-bit PTS/DTS from its 5-byte field (PROTOCOL §5.2)."""
    return (
        ((buf[p] >> 1) & 7) << 30
        | buf[p + 1] << 22
        | (buf[p + 2] >> 1) << 15
        | buf[p + 3] << 7
        | buf[p + 4] >> 1
    )


def find_ps_start(buf: bytearray, start: int, end: int) -> int:
    """Offset of the first ``00 00 01 xx`` with xx >= 0xB9 (a PS start code) in [start, end)."""
    i = buf.find(START_CODE, start, end)
    while 0 <= i < end - 3:
        if buf[i + 3] >= 0xB9:
            return i
        i = buf.find(START_CODE, i + 3, end)
    return -1


def parse_pes_header(buf: bytearray, pos: int, end: int) -> tuple[int | None, int | None, int]:
    """(pts, dts, payload offset) of the MPEG-2 PES whose start code is at ``pos``."""
    if end - pos < 9:
        raise PsDemuxError("bad_pes", "PES header is truncated", pos)
    if buf[pos + 6] & 0xC0 != 0x80:
        raise PsDemuxError("bad_pes", "PES header is not MPEG-2 (no '10' marker)", pos)
    flags = buf[pos + 7] >> 6
    header_len = buf[pos + 8]
    payload = pos + 9 + header_len
    if payload > end:
        raise PsDemuxError("bad_pes", f"PES header length {header_len} overruns the packet", pos)
    if flags == 2:
        if header_len < 5:
            raise PsDemuxError("bad_pes", "PES PTS does not fit in the header", pos)
        pts = read_timestamp(buf, pos + 9)
        return pts, pts, payload
    if flags == 3:
        if header_len < 10:
            raise PsDemuxError("bad_pes", "PES PTS and DTS do not fit in the header", pos)
        return read_timestamp(buf, pos + 9), read_timestamp(buf, pos + 14), payload
    if flags == 1:
        raise PsDemuxError("bad_pes", "PES PTS_DTS_flags '01' is forbidden", pos)
    return None, None, payload


def parse_psm(buf: bytearray, pos: int, end: int) -> dict[int, int]:
    """stream_id -> stream_type from the PSM at ``pos``; the CRC is not checked (Q-8)."""
    p = pos + 6
    crc = end - 4
    if crc - p < 6:
        raise PsDemuxError("bad_psm", f"PSM of {end - pos} bytes is too short", pos)
    p += 4 + (buf[p + 2] << 8 | buf[p + 3])
    if p + 2 > crc:
        raise PsDemuxError("bad_psm", "PSM program_stream_info_length overruns it", pos)
    es_end = p + 2 + (buf[p] << 8 | buf[p + 1])
    p += 2
    if es_end > crc:
        raise PsDemuxError("bad_psm", "PSM elementary_stream_map_length overruns it", pos)
    types: dict[int, int] = {}
    while p + 4 <= es_end:
        types.setdefault(buf[p + 1], buf[p])
        p += 4 + (buf[p + 2] << 8 | buf[p + 3])
    if p != es_end:
        raise PsDemuxError("bad_psm", "PSM elementary stream entry overruns the map", pos)
    return types

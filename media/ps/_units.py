"""Access units and the PS stream-type table shared by the demuxer and the muxer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from media.codec_info import Codec

__all__ = [
    "AUDIO_CODECS",
    "CODEC_STREAM_TYPE",
    "PTS_MODULO",
    "STREAM_TYPE_CODEC",
    "VIDEO_CODECS",
    "AccessUnit",
    "MediaKind",
    "PsDemuxError",
]

MediaKind = Literal["video", "audio"]

PTS_MODULO = 1 << 33
"""PTS/DTS/SCR values are 33-bit counters of 90 kHz ticks (ISO/IEC 13818-1 §2.4.3.7)."""

# PROTOCOL §5.2: PSM stream_type -> codec. 0x80 is SVAC video and 0x9B SVAC audio (libmpeg).
STREAM_TYPE_CODEC: dict[int, Codec] = {
    0x10: Codec.MPEG4,
    0x1B: Codec.H264,
    0x24: Codec.H265,
    0x80: Codec.SVAC,
    0x0F: Codec.AAC,
    0x90: Codec.PCMA,
    0x91: Codec.PCMU,
    0x92: Codec.G722_1,
    0x93: Codec.G723_1,
    0x99: Codec.G729,
    0x9B: Codec.SVAC_AUDIO,
}
CODEC_STREAM_TYPE: dict[Codec, int] = {c: t for t, c in STREAM_TYPE_CODEC.items()}
VIDEO_CODECS = frozenset((Codec.H264, Codec.H265, Codec.MPEG4, Codec.SVAC))
AUDIO_CODECS = frozenset(
    (
        Codec.PCMA,
        Codec.PCMU,
        Codec.AAC,
        Codec.G722_1,
        Codec.G723_1,
        Codec.G729,
        Codec.SVAC_AUDIO,
    )
)


class PsDemuxError(ValueError):
    """A malformed PS structure. ``kind`` names the fault counter, ``offset`` is the byte
    offset of the structure in the demuxer's input stream (bytes fed since creation)."""

    def __init__(self, kind: str, reason: str, offset: int = 0) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.kind = kind
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One video picture (Annex-B bytes) or one audio PES payload, with 90 kHz timing."""

    kind: MediaKind
    codec: Codec
    pts: int | None
    """Presentation time, 90 kHz ticks (33-bit); the RTP timestamp when the PES had none."""
    dts: int | None
    """Decode time, 90 kHz ticks; equal to ``pts`` when the PES carried no DTS."""
    keyframe: bool
    """Video: a random-access picture (IDR/IRAP/I-VOP). Audio: always True."""
    data: bytes

    def __post_init__(self) -> None:
        if self.kind != "video" and self.kind != "audio":
            raise ValueError(f"access unit kind must be 'video' or 'audio', not {self.kind!r}")
        for name, value in (("pts", self.pts), ("dts", self.dts)):
            if value is not None and not 0 <= value < PTS_MODULO:
                raise ValueError(f"access unit {name} {value} is not a 33-bit tick count")

"""MPEG-PS for GB/T 28181: a sans-I/O demuxer (PS bytes -> access units) and a muxer.

See ``_demux`` for the rules and theory of operation, ``_mux`` for the layout written.
"""

from media.codec_info import Codec
from media.ps._demux import (
    FAULT_KINDS,
    MAX_FRAME_SIZE,
    MAX_HELD_BYTES,
    MAX_HELD_UNITS,
    MAX_PENDING_UNITS,
    PsDemuxer,
    PsDemuxStats,
)
from media.ps._mux import AUDIO_STREAM_ID, END_CODE, VIDEO_STREAM_ID, PsMuxer, crc32_mpeg2
from media.ps._units import (
    CODEC_STREAM_TYPE,
    STREAM_TYPE_CODEC,
    AccessUnit,
    MediaKind,
    PsDemuxError,
)

__all__ = [
    "AUDIO_STREAM_ID",
    "CODEC_STREAM_TYPE",
    "END_CODE",
    "FAULT_KINDS",
    "MAX_FRAME_SIZE",
    "MAX_HELD_BYTES",
    "MAX_HELD_UNITS",
    "MAX_PENDING_UNITS",
    "STREAM_TYPE_CODEC",
    "VIDEO_STREAM_ID",
    "AccessUnit",
    "Codec",
    "MediaKind",
    "PsDemuxError",
    "PsDemuxStats",
    "PsDemuxer",
    "PsMuxer",
    "crc32_mpeg2",
]

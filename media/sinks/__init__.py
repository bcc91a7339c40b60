"""Sinks: one stream's access units remuxed for viewers (HTTP-FLV, HTTP-TS, raw PS), and
JPEG snapshots. The hub builds one muxer per stream and format with ``make_muxer``.
"""

from __future__ import annotations

from typing import Literal

from media.codec_info import Codec
from media.sinks._base import Muxer, UnsupportedCodec
from media.sinks.flv import FlvMuxer, HevcMode
from media.sinks.ps import PsSink
from media.sinks.snapshot import SnapshotError, decode_units, encode_jpeg, snapshot_jpeg
from media.sinks.ts import TsMuxer

__all__ = [
    "FORMATS",
    "FlvMuxer",
    "HevcMode",
    "Muxer",
    "MuxerFormat",
    "PsSink",
    "SnapshotError",
    "TsMuxer",
    "UnsupportedCodec",
    "decode_units",
    "encode_jpeg",
    "make_muxer",
    "snapshot_jpeg",
]

MuxerFormat = Literal["flv", "ts", "ps"]
FORMATS: tuple[MuxerFormat, ...] = ("flv", "ts", "ps")


def make_muxer(
    fmt: str,
    video_codec: Codec | None,
    audio_codec: Codec | None,
    *,
    hevc_mode: HevcMode = "codec12",
) -> Muxer:
    """A new muxer for ``fmt`` ("flv", "ts" or "ps"); ``UnsupportedCodec`` if it cannot
    carry ``video_codec``. Audio it cannot carry is left out (see each module), not an error.
    """
    if fmt == "flv":
        if audio_codec is not None and audio_codec not in (Codec.PCMA, Codec.PCMU, Codec.AAC):
            audio_codec = None
        return FlvMuxer(video_codec, audio_codec, hevc_mode=hevc_mode)
    if fmt == "ts":
        if audio_codec is not None and audio_codec != Codec.AAC:
            audio_codec = None
        return TsMuxer(video_codec, audio_codec)
    if fmt == "ps":
        return PsSink(video_codec, audio_codec)
    raise ValueError(f"unknown muxer format {fmt!r}, expected one of {', '.join(FORMATS)}")

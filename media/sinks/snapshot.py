"""Channel snapshots: decode a cached keyframe with PyAV and encode it as a JPEG.

PyAV work blocks for milliseconds (about 2 ms for a 640x360 keyframe, more at 1080p), so
``snapshot_jpeg`` runs it in an executor (STYLE.md: PyAV never on the loop). ``decode_units``
is the synchronous core, also used by tests to check what the sinks wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from fractions import Fraction
from functools import partial
from typing import Final, Literal

import av
from av.video.frame import VideoFrame

from media.codec_info import Codec
from media.ps import AccessUnit

__all__ = ["JPEG_QSCALE", "SnapshotError", "decode_units", "encode_jpeg", "snapshot_jpeg"]

JPEG_QSCALE: Final = 3
"""MJPEG quantiser scale (FFmpeg's -q:v, 2 best .. 31 worst): about 14 KB at 640x360."""

_DECODERS: Final[dict[Codec, Literal["h264", "hevc", "mpeg4"]]] = {
    Codec.H264: "h264",
    Codec.H265: "hevc",
    Codec.MPEG4: "mpeg4",
}
_TICKS: Final = Fraction(1, 90000)


class SnapshotError(ValueError):
    """No picture could be made from the units given (no keyframe, undecodable data)."""


def decode_units(units: Sequence[AccessUnit]) -> list[VideoFrame]:
    """Decode the video units (one codec, the first unit's) into frames, flushing at the end.

    Blocking: call it from an executor. Raises ``SnapshotError`` on a codec PyAV cannot
    decode here or on a decoder error.
    """
    video = [u for u in units if u.kind == "video"]
    if not video:
        raise SnapshotError("no video access units to decode")
    codec = video[0].codec
    name = _DECODERS.get(codec)
    if name is None:
        raise SnapshotError(f"cannot decode video codec {codec}")
    frames: list[VideoFrame] = []
    try:
        ctx = av.CodecContext.create(name, "r")
        for unit in video:
            if unit.codec != codec:
                continue
            packet = av.Packet(unit.data)
            packet.pts = unit.pts
            packet.dts = unit.dts
            packet.time_base = _TICKS
            frames.extend(ctx.decode(packet))
        frames.extend(ctx.decode(None))
    except av.FFmpegError as exc:
        raise SnapshotError(f"{name} decoder failed: {exc}") from exc
    return frames


def encode_jpeg(frame: VideoFrame, *, max_width: int | None = None) -> bytes:
    """A baseline JPEG (yuvj420p) of ``frame``, scaled down to ``max_width`` pixels if wider."""
    width, height = frame.width, frame.height
    if max_width is not None and width > max_width:
        if max_width < 2:
            raise ValueError(f"max_width {max_width} is smaller than 2 pixels")
        height = max(2, round(height * max_width / width / 2) * 2)
        width = max_width & ~1
    try:
        image = frame.reformat(width=width, height=height, format="yuvj420p")
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width = width
        encoder.height = height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = Fraction(1, 25)
        encoder.qmin = encoder.qmax = JPEG_QSCALE
        packets = encoder.encode(image) + encoder.encode(None)
    except av.FFmpegError as exc:
        raise SnapshotError(f"JPEG encoding failed: {exc}") from exc
    return b"".join(bytes(p) for p in packets)


def _snapshot(units: tuple[AccessUnit, ...], max_width: int | None) -> bytes:
    key = next((u for u in units if u.kind == "video" and u.keyframe), None)
    if key is None:
        raise SnapshotError("no video keyframe to decode")
    frames = decode_units((key,))
    if not frames:
        raise SnapshotError(f"the {key.codec} keyframe decoded to no picture")
    return encode_jpeg(frames[0], max_width=max_width)


async def snapshot_jpeg(
    units: Sequence[AccessUnit],
    *,
    executor: Executor | None = None,
    max_width: int | None = None,
) -> bytes:
    """JPEG bytes of the first video keyframe in ``units`` (its parameter sets in the unit).

    Decoding and encoding run in ``executor`` (the loop's default if None). Raises
    ``SnapshotError`` when there is no keyframe or it cannot be decoded.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, partial(_snapshot, tuple(units), max_width))

"""Shared helpers of the sink tests: demuxed samples, and the real ffprobe and PyAV as judges."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import av
import av.logging
import pytest

from media.ps import AccessUnit, Codec, PsDemuxer

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"


@cache
def sample_units(name: str) -> tuple[AccessUnit, ...]:
    d = PsDemuxer(max_units=100_000)
    d.feed((DATA / name).read_bytes())
    d.flush()
    return tuple(d.pop_units())


def codecs(units: tuple[AccessUnit, ...]) -> tuple[Codec, Codec | None]:
    video = next(u.codec for u in units if u.kind == "video")
    audio = next((u.codec for u in units if u.kind == "audio"), None)
    return video, audio


def ffprobe(path: Path) -> list[dict[str, object]]:
    """Streams as ffprobe 5.1 counts them; fails the test if ffprobe is missing or complains."""
    exe = shutil.which("ffprobe")
    if exe is None:
        pytest.fail("ffprobe not found: install ffmpeg (make test does)")
    entries = "stream=codec_name,codec_type,width,height,nb_read_frames,sample_rate,channels"
    result = subprocess.run(
        [exe, "-v", "error", "-count_frames", "-show_entries", entries, "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    )
    assert result.stderr == ""
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams


def pyav_frames(path: Path) -> list[tuple[int, int, str]]:
    """(width, height, codec) of every video frame PyAV decodes; no FFmpeg error logged."""
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            stream = container.streams.video[0]
            name = stream.codec_context.name
            frames = [(f.width, f.height, name) for f in container.decode(stream)]
    finally:
        av.logging.set_level(None)
    assert [m for m in logs if m[0] <= av.logging.ERROR] == []
    return frames

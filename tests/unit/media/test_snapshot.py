"""media.sinks.snapshot: JPEGs of the samples' keyframes, decoded back; failures typed."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import av
import pytest

from media.ps import Codec
from media.sinks import SnapshotError, decode_units, snapshot_jpeg
from tests.unit.media.sinkutil import sample_units

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"
SAMPLES = [H264, H265, H264_G711A]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's SOF0 marker, checking SOI and EOI."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xC0:  # baseline start of frame: precision, height, width
            return int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(
                data[pos + 5 : pos + 7], "big"
            )
        pos += 2 + length
    raise AssertionError("no SOF0 marker")


def decode_jpeg(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data), "r") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


@pytest.mark.parametrize("name", SAMPLES)
async def test_snapshot_of_each_sample_decodes_back(name: str) -> None:
    units = sample_units(name)
    data = await snapshot_jpeg(units)
    assert jpeg_size(data) == (640, 360)
    assert decode_jpeg(data) == (640, 360)
    small = await snapshot_jpeg(units, max_width=320)
    assert jpeg_size(small) == (320, 180)
    assert len(small) < len(data)


async def test_snapshot_runs_in_the_given_executor() -> None:
    names: list[str] = []

    def record() -> None:
        names.append(threading.current_thread().name)

    with ThreadPoolExecutor(1, thread_name_prefix="snap") as pool:
        pool.submit(record).result()
        data = await snapshot_jpeg(sample_units(H264), executor=pool)
    assert names == ["snap_0"] and jpeg_size(data) == (640, 360)


async def test_the_keyframe_is_found_after_other_units() -> None:
    units = sample_units(H264_G711A)
    assert units[0].kind == "audio"
    tail = [u for u in units[:60] if not u.keyframe or u.kind == "audio"]
    gop = [*tail[:5], *units[50:]]  # audio and P-frames before the keyframe
    assert jpeg_size(await snapshot_jpeg(gop)) == (640, 360)


@pytest.mark.parametrize("name", SAMPLES)
def test_decode_units_gives_every_frame(name: str) -> None:
    frames = decode_units(sample_units(name))
    assert len(frames) == 250
    assert {(f.width, f.height) for f in frames} == {(640, 360)}


async def test_no_keyframe_is_a_typed_error() -> None:
    units = sample_units(H264)
    with pytest.raises(SnapshotError, match="no video keyframe"):
        await snapshot_jpeg([u for u in units if not u.keyframe])
    with pytest.raises(SnapshotError, match="no video keyframe"):
        await snapshot_jpeg([])


async def test_undecodable_keyframes_are_typed_errors() -> None:
    key = sample_units(H264)[0]
    without_parameter_sets = replace(key, data=key.data[key.data.find(b"\x00\x00\x01\x65") :])
    garbage = replace(key, data=b"\x00\x00\x00\x01\x65" + bytes(range(7, 200)) * 10)
    for unit in (without_parameter_sets, garbage):
        with pytest.raises(SnapshotError):
            await snapshot_jpeg([unit])
    with pytest.raises(SnapshotError, match="cannot decode video codec svac"):
        await snapshot_jpeg([replace(key, codec=Codec.SVAC)])
    with pytest.raises(SnapshotError, match="no video access units"):
        decode_units([u for u in sample_units(H264_G711A) if u.kind == "audio"])
    assert issubclass(SnapshotError, ValueError)

"""media.sinks.ps: the PsMuxer behind the Muxer protocol, read back by PsDemuxer and ffprobe."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import av
import av.logging
import pytest

from media.ps import AccessUnit, Codec, PsDemuxer
from media.sinks import PsSink
from tests.unit.media.sinkutil import codecs, sample_units

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"


def demux(data: bytes) -> list[AccessUnit]:
    d = PsDemuxer(max_units=100_000)
    d.feed(data)
    d.flush()
    assert not any(d.stats.faults().values()), d.stats
    return d.pop_units()


def ffprobe(path: Path, *select: str, g711: bool = False) -> list[dict[str, object]]:
    """Streams as ffprobe 5.1 counts them; fails the test if ffprobe is missing or complains.

    ``g711``: ffprobe 5.1 maps no PSM stream_type to G.711 and takes 0x90 audio for MPEG
    audio, so its "[mp2] Header missing" complaint is expected and ignored.
    """
    exe = shutil.which("ffprobe")
    if exe is None:
        pytest.fail("ffprobe not found: install ffmpeg (make test does)")
    entries = "stream=codec_name,codec_type,width,height,nb_read_frames,sample_rate,channels"
    result = subprocess.run(
        [
            exe,
            "-v",
            "error",
            *select,
            "-count_frames",
            "-show_entries",
            entries,
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    )
    noise = re.compile(r"\[mp2 @ 0x[0-9a-f]+\] Header missing") if g711 else None
    assert [
        line for line in result.stderr.splitlines() if not (noise and noise.fullmatch(line))
    ] == []
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams


@pytest.mark.parametrize("name", [H264, H265, H264_G711A])
def test_units_round_trip(name: str) -> None:
    units = sample_units(name)
    sink = PsSink(*codecs(units))
    assert sink.content_type == "video/mp2p"
    assert sink.header() == b""
    first_key = next(i for i, u in enumerate(units) if u.kind == "video" and u.keyframe)
    out = [sink.mux(u) for u in units]
    assert out[:first_key] == [b""] * first_key
    assert all(o.startswith(b"\x00\x00\x01\xba") for o in out[first_key:])  # one pack each
    assert demux(b"".join(out)) == list(units[first_key:])


@pytest.mark.parametrize(("name", "video"), [(H264, "h264"), (H265, "hevc"), (H264_G711A, "h264")])
def test_ffprobe_reads_it_from_any_keyframe(name: str, video: str, tmp_path: Path) -> None:
    units = sample_units(name)
    sink = PsSink(*codecs(units))
    out = [sink.mux(u) for u in units]
    video_index = [i for i, u in enumerate(units) if u.kind == "video"]
    for start in (video_index[0], next(i for i in video_index[110:] if units[i].keyframe)):
        path = tmp_path / f"from{start}.ps"
        path.write_bytes(sink.header() + b"".join(out[start:]))
        # ffprobe 5.1 is asked about the video only; PyAV checks G.711 below.
        (stream,) = ffprobe(path, "-select_streams", "v", g711=name == H264_G711A)
        frames = sum(1 for u in units[start:] if u.kind == "video")
        assert stream["codec_name"] == video
        assert (stream["width"], stream["height"]) == (640, 360)
        assert stream["nb_read_frames"] == str(frames)


def test_pyav_reads_g711a_from_our_psm(tmp_path: Path) -> None:
    units = sample_units(H264_G711A)
    sink = PsSink(Codec.H264, Codec.PCMA)
    path = tmp_path / "out.ps"
    path.write_bytes(b"".join(sink.mux(u) for u in units))
    # The first pack written has the PSM (the sink starts at the keyframe), so the FFmpeg in
    # PyAV's wheels knows 0xC0 is A-law before it meets the first audio PES.
    with av.open(str(path)) as container:
        (audio,) = container.streams.audio
        assert (audio.codec_context.name, audio.codec_context.sample_rate) == ("pcm_alaw", 8000)
        samples = sum(f.samples for f in container.decode(audio))
    assert samples == 249 * 320


def test_audio_only_joiners_get_the_psm_first() -> None:
    audio = [u for u in sample_units(H264_G711A) if u.kind == "audio"][:10]
    sink = PsSink(None, Codec.PCMA)
    out = [sink.mux(u) for u in audio]
    assert demux(b"".join(out)) == audio
    # A joiner at the 6th unit: header() tells the PsDemuxer that 0xC0 is A-law.
    d = PsDemuxer(max_units=100)
    d.feed(sink.header())
    assert d.audio_codec == Codec.PCMA
    assert demux(sink.header() + b"".join(out[5:])) == audio[5:]
    with pytest.raises(ValueError):
        PsSink(None, None)


@pytest.mark.parametrize(("name", "codec"), [(H264, "h264"), (H265, "hevc"), (H264_G711A, "h264")])
def test_pyav_decodes_every_frame(name: str, codec: str, tmp_path: Path) -> None:
    units = sample_units(name)
    sink = PsSink(*codecs(units))
    path = tmp_path / "out.ps"
    path.write_bytes(b"".join(sink.mux(u) for u in units))
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [(f.width, f.height) for f in container.decode(stream)]
            assert stream.codec_context.name == codec
    finally:
        av.logging.set_level(None)
    assert [m for m in logs if m[0] <= av.logging.ERROR] == []
    assert frames == [(640, 360)] * 250

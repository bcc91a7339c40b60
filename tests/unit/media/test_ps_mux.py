"""media.ps muxer: wire bytes against PROTOCOL §5.2, round trips, and ffprobe as a reader."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.ps import (
    END_CODE,
    AccessUnit,
    Codec,
    PsDemuxer,
    PsMuxer,
    crc32_mpeg2,
)

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"

PSM_EXAMPLE = bytes.fromhex("000001bc0012e0ff000000081be0000090c00000fedfb1d7")  # PROTOCOL §5.2


@cache
def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


@cache
def sample_units(name: str) -> tuple[AccessUnit, ...]:
    d = PsDemuxer(max_units=100_000)
    d.feed(sample(name))
    d.flush()
    return tuple(d.pop_units())


def demux(data: bytes) -> list[AccessUnit]:
    d = PsDemuxer(max_units=100_000)
    d.feed(data)
    d.flush()
    assert not any(d.stats.faults().values()), d.stats
    return d.pop_units()


def structures(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        sid = data[pos + 3]
        size = (
            14 + (data[pos + 13] & 7)
            if sid == 0xBA
            else 4
            if sid == 0xB9
            else 6 + struct.unpack_from(">H", data, pos + 4)[0]
        )
        out.append(data[pos : pos + size])
        pos += size
    return out


# ---------------------------------------------------------------- wire bytes


def test_crc32_mpeg2_of_the_protocol_psm() -> None:
    assert crc32_mpeg2(PSM_EXAMPLE[:-4]) == 0xFEDFB1D7
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value


def test_psm_matches_the_protocol_example() -> None:
    mux = PsMuxer(video_codec=Codec.H264, audio_codec=Codec.PCMA)
    assert mux.program_stream_map() == PSM_EXAMPLE


def test_video_pack_layout() -> None:
    mux = PsMuxer(video_codec=Codec.H264)
    key = AccessUnit("video", Codec.H264, 900000, 900000, True, b"\x00\x00\x00\x01\x65" * 200)
    parts = structures(mux.mux(key))
    assert [p[3] for p in parts] == [0xBA, 0xBB, 0xBC, 0xE0]
    pack, _, psm, pes = parts
    b = pack
    scr = (  # PROTOCOL §5.2
        ((b[4] >> 3) & 7) << 30
        | (b[4] & 3) << 28
        | b[5] << 20
        | ((b[6] >> 3) & 0x1F) << 15
        | (b[6] & 3) << 13
        | b[7] << 5
        | b[8] >> 3
    )
    assert scr == 900000 - 3600
    assert int.from_bytes(b[10:13], "big") >> 2 == 25000 and b[13] & 7 == 0
    assert psm[12:16] == b"\x1b\xe0\x00\x00"
    assert pes[6:14] == bytes.fromhex("8480052100377741")
    assert pes[14:] == key.data
    p_frame = AccessUnit("video", Codec.H264, 903600, 903600, False, b"\x00\x00\x01\x41\x9a")
    assert [p[3] for p in structures(mux.mux(p_frame))] == [0xBA, 0xE0]


def test_pts_and_dts_fields() -> None:
    unit = AccessUnit("video", Codec.H264, 903600, 900000, False, b"\x00\x00\x01\x41")
    pes = structures(PsMuxer(video_codec=Codec.H264).mux(unit))[-1]
    assert pes[6:19] == bytes.fromhex("84c00a" + "3100379361" + "1100377741")  # PROTOCOL §5.2


def test_large_frame_is_split_into_pes_of_at_most_65535_bytes() -> None:
    data = b"\x00\x00\x00\x01\x65" + bytes(range(1, 256)) * 1000  # ~255 KB
    unit = AccessUnit("video", Codec.H264, 0, 0, True, data)
    pes = [p for p in structures(PsMuxer().mux(unit)) if p[3] == 0xE0]
    assert len(pes) == 4
    assert all(struct.unpack_from(">H", p, 4)[0] <= 0xFFFF for p in pes)
    assert pes[0][7] == 0x80 and all(p[7] == 0x00 for p in pes[1:])  # PTS on the first only
    assert demux(PsMuxer().mux(unit)) == [unit]


def test_audio_gets_its_own_pack_and_the_first_unit_a_psm() -> None:
    mux = PsMuxer()
    audio = AccessUnit("audio", Codec.PCMA, 90000, 90000, True, b"\xd5" * 320)
    first = structures(mux.mux(audio))
    assert [p[3] for p in first] == [0xBA, 0xBB, 0xBC, 0xC0]
    assert first[2][12:16] == b"\x90\xc0\x00\x00"
    assert [p[3] for p in structures(mux.mux(audio))] == [0xBA, 0xC0]


def test_codec_change_rewrites_the_psm_with_a_new_version() -> None:
    mux = PsMuxer(video_codec=Codec.H264)
    mux.mux(AccessUnit("video", Codec.H264, 0, 0, True, b"\x00\x00\x01\x65"))
    parts = structures(mux.mux(AccessUnit("audio", Codec.PCMU, 0, 0, True, b"\xff")))
    psm = parts[2]
    assert psm[3] == 0xBC and psm[6] & 0x1F == 1
    assert psm[12:20] == b"\x1b\xe0\x00\x00\x91\xc0\x00\x00"
    assert crc32_mpeg2(psm) == 0  # a CRC-32/MPEG-2 over data + CRC leaves no remainder


@pytest.mark.parametrize("name", [H264, H265])
def test_remux_of_a_sample_is_byte_identical(name: str) -> None:
    # The samples are camera-style PS (one pack per frame, PSM on keyframes): ours is too.
    mux = PsMuxer()
    out = b"".join(mux.mux(u) for u in sample_units(name)) + mux.end()
    assert out == sample(name)


def test_remux_of_the_audio_sample_round_trips() -> None:
    units = list(sample_units(H264_G711A))
    mux = PsMuxer()
    assert demux(b"".join(mux.mux(u) for u in units) + mux.end()) == units


def test_protocol_pack_header_example() -> None:
    mux = PsMuxer(mux_rate=6106)
    unit = AccessUnit("audio", Codec.PCMA, 903600, 903600, True, b"\xd5")
    assert mux.mux(unit)[:14] == bytes.fromhex("000001ba4400dddd0401005f6bf8")  # SCR 900000


def test_mux_rate_is_validated() -> None:
    with pytest.raises(ValueError):
        PsMuxer(mux_rate=0)


# ---------------------------------------------------------------- round trip


def nal_body(size: int) -> st.SearchStrategy[bytes]:
    """NAL payload bytes without 00, hence no start code inside; large ones from a seed."""
    return st.builds(
        lambda seed, n: random.Random(seed).randbytes(n).replace(b"\x00", b"\x01"),
        st.integers(0, 2**32),
        st.integers(1, size),
    )


@st.composite
def video_units(draw: st.DrawFn) -> AccessUnit:
    codec = draw(st.sampled_from([Codec.H264, Codec.H265]))
    key = draw(st.booleans())
    if codec == Codec.H264:
        headers = [b"\x67\x42", b"\x68\xce", b"\x65" if key else b"\x41"]
    else:
        headers = [b"\x40\x01", b"\x42\x01", b"\x26\x01" if key else b"\x02\x01"]
    if not key:
        headers = headers[2:]
    big = draw(st.sampled_from([300, 300, 300, 140_000]))
    data = b"".join(b"\x00\x00\x00\x01" + h + draw(nal_body(big)) for h in headers)
    pts = draw(st.integers(0, (1 << 33) - 1))
    dts = draw(st.one_of(st.just(pts), st.integers(0, (1 << 33) - 1)))
    return AccessUnit("video", codec, pts, dts, key, data)


audio_units = st.builds(
    AccessUnit,
    kind=st.just("audio"),
    codec=st.sampled_from([Codec.PCMA, Codec.PCMU, Codec.AAC]),
    pts=st.integers(0, (1 << 33) - 1),
    dts=st.none(),
    keyframe=st.just(True),
    # Known gap: audio holding 00 00 01 BA looks like a cut packet, so it is left out here.
    data=st.binary(min_size=1, max_size=2000).filter(lambda b: b"\x00\x00\x01\xba" not in b),
).map(lambda u: AccessUnit(u.kind, u.codec, u.pts, u.pts, True, u.data))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(video_units(), audio_units), min_size=1, max_size=12))
def test_demux_of_mux_gives_the_units_back(units: list[AccessUnit]) -> None:
    mux = PsMuxer()
    assert demux(b"".join(mux.mux(u) for u in units)) == units


@settings(max_examples=20, deadline=None)
@given(st.lists(video_units(), min_size=1, max_size=6), st.data())
def test_mux_then_rtp_sized_cuts_round_trip(units: list[AccessUnit], data: st.DataObject) -> None:
    mux = PsMuxer()
    stream = b"".join(mux.mux(u) for u in units)
    step = data.draw(st.integers(1, 1400))
    d = PsDemuxer()
    out: list[AccessUnit] = []
    for i in range(0, len(stream), step):
        d.feed(stream[i : i + step])
        out.extend(d.pop_units())
    d.flush()
    out.extend(d.pop_units())
    assert out == units


# ---------------------------------------------------------------- a real reader


@pytest.mark.parametrize(("name", "codec"), [(H264, "h264"), (H265, "hevc")])
def test_ffprobe_reads_our_ps(name: str, codec: str, tmp_path: Path) -> None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.fail("ffprobe not found: install ffmpeg (make test does)")
    mux = PsMuxer()
    path = tmp_path / "out.ps"
    path.write_bytes(b"".join(mux.mux(u) for u in sample_units(name)) + mux.end())
    result = subprocess.run(
        [
            ffprobe,
            *("-v", "error", "-count_packets", "-of", "json"),
            *("-show_entries", "stream=codec_name,width,height,nb_read_packets"),
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    (stream,) = json.loads(result.stdout)["streams"]
    assert stream == {
        "codec_name": codec,
        "width": 640,
        "height": 360,
        "nb_read_packets": "250",
    }


def test_end_code_constant() -> None:
    assert PsMuxer().end() == END_CODE == b"\x00\x00\x01\xb9"

"""media.codec_info: NAL iteration, codec sniffing, keyframes, SPS picture size."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codec_info import (
    Codec,
    SpsParseError,
    is_keyframe,
    iter_nals,
    parse_h264_sps,
    parse_h265_sps,
    sniff_video_codec,
    video_size,
)
from media.ps import AccessUnit, PsDemuxer

DATA = Path(__file__).parents[2] / "data" / "media"

# The SPS of the samples (x264 baseline with 8 rows cropped, x265 main); the H.264 one holds
# an emulation-prevention byte (00 00 03).
H264_SPS = bytes.fromhex("6742c01eda0280bfe5c044000003000400000300c83c58ba80")
H265_SPS = bytes.fromhex(
    "42010101600000030090000003000003003fa00502016965ba924caf016808000003000800000300c840"
)


def sample_units(name: str) -> list[AccessUnit]:
    demuxer = PsDemuxer(max_units=100_000)
    demuxer.feed((DATA / name).read_bytes())
    demuxer.flush()
    return demuxer.pop_units()


# ---------------------------------------------------------------- NAL units


def test_iter_nals_handles_3_and_4_byte_start_codes() -> None:
    data = b"junk\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x00\x01\x65\x88"
    assert list(iter_nals(data)) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]


def test_iter_nals_without_start_code_or_empty_nals() -> None:
    assert list(iter_nals(b"\x67\x42")) == []
    assert list(iter_nals(b"\x00\x00\x01\x00\x00\x01\x09\xf0")) == [b"\x09\xf0"]


@given(st.lists(st.binary(min_size=1, max_size=50).map(lambda b: b"\x41" + b), max_size=8))
def test_iter_nals_recovers_escaped_nals(nals: list[bytes]) -> None:
    # A real NAL never contains 00 00 0x (x <= 3) and never ends with 00: escape like an encoder.
    clean = [n.replace(b"\x00", b"\x01") for n in nals]
    assert list(iter_nals(b"".join(b"\x00\x00\x00\x01" + n for n in clean))) == clean


# ---------------------------------------------------------------- sniffing and keyframes


@pytest.mark.parametrize(
    ("name", "codec"),
    [("h264_640x360_25fps_10s.ps", Codec.H264), ("h265_640x360_25fps_10s.ps", Codec.H265)],
)
def test_samples_sniff_key_and_size(name: str, codec: Codec) -> None:
    units = sample_units(name)
    assert all(sniff_video_codec(u.data) == codec for u in units)
    keys = [i for i, u in enumerate(units) if is_keyframe(codec, u.data)]
    assert keys == list(range(0, 250, 25))
    assert video_size(codec, units[0].data) == (640, 360)
    assert video_size(codec, units[1].data) is None  # a P-frame has no SPS


def test_sniff_needs_an_unambiguous_header() -> None:
    assert sniff_video_codec(b"") is None
    assert sniff_video_codec(b"\x00\x00\x01") is None
    assert sniff_video_codec(b"\x00\x00\x01\x06\x05") is None  # SEI: could be either
    assert sniff_video_codec(b"\x00\x00\x01\x09\xf0") == Codec.H264  # AUD
    assert sniff_video_codec(b"\x00\x00\x01\x46\x01\x50") == Codec.H265  # AUD
    assert sniff_video_codec(b"\x00\x00\x01\xb0\x01") == Codec.MPEG4  # VOS


def test_is_keyframe_rules() -> None:
    assert is_keyframe(Codec.H264, b"\x00\x00\x01\x09\xf0\x00\x00\x01\x65\x88") is True
    assert is_keyframe(Codec.H264, b"\x00\x00\x01\x06\x05\x00\x00\x01\x41\x9a") is False
    assert is_keyframe(Codec.H265, b"\x00\x00\x01\x2a\x01\xaf") is True  # CRA (21)
    assert is_keyframe(Codec.H265, b"\x00\x00\x01\x02\x01\xd0") is False  # TRAIL_R
    assert is_keyframe(Codec.MPEG4, b"\x00\x00\x01\xb6\x10") is True  # I-VOP
    assert is_keyframe(Codec.MPEG4, b"\x00\x00\x01\xb6\x50") is False  # P-VOP
    assert is_keyframe(Codec.SVAC, b"\x00\x00\x01\x65") is None
    assert is_keyframe(Codec.H264, b"") is False


# ---------------------------------------------------------------- SPS


def test_sample_sps() -> None:
    assert parse_h264_sps(H264_SPS) == (640, 360)
    assert parse_h265_sps(H265_SPS) == (640, 360)


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> None:
        self.bits.extend((value >> (count - 1 - i)) & 1 for i in range(count))

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = [*self.bits, 1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        return int("".join(map(str, bits)), 2).to_bytes(len(bits) // 8, "big")


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes as an encoder does (H.264 §7.4.1)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


@given(
    profile=st.sampled_from([66, 77, 100, 244]),
    chroma=st.integers(0, 3),
    width_mbs=st.integers(1, 300),
    height_units=st.integers(1, 200),
    frame_mbs_only=st.booleans(),
    poc_type=st.integers(0, 2),
    crop=st.tuples(*[st.integers(0, 3)] * 4),
    scaling=st.booleans(),
)
def test_h264_sps_synthetic(
    profile: int,
    chroma: int,
    width_mbs: int,
    height_units: int,
    frame_mbs_only: bool,
    poc_type: int,
    crop: tuple[int, int, int, int],
    scaling: bool,
) -> None:
    w = BitWriter()
    w.u(8, profile)
    w.u(16, 0x001E)  # constraint flags, level 3.0: the zero byte forces escapes
    w.ue(0)
    high = profile in (100, 244)
    if not high:
        chroma = 1
    if high:
        w.ue(chroma)
        if chroma == 3:
            w.u(1, 0)
        w.ue(0)
        w.ue(0)
        w.u(1, 0)
        w.u(1, int(scaling))
        if scaling:
            for i in range(12 if chroma == 3 else 8):
                w.u(1, i % 2)
                if i % 2:
                    for _ in range(16 if i < 6 else 64):
                        w.se(-3)
    w.ue(0)
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 0)
        w.se(-1)
        w.se(2)
        w.ue(2)
        w.se(1)
        w.se(-1)
    w.ue(1)
    w.u(1, 0)
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    w.u(1, int(frame_mbs_only))
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)
    w.u(1, 1)
    for value in crop:
        w.ue(value)
    w.u(1, 0)  # vui_parameters_present_flag
    nal = b"\x67" + escape(w.rbsp())
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma]
    unit_y = sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    assert parse_h264_sps(nal) == (width, height)


@given(
    sub_layers=st.integers(0, 6),
    flags=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=6, max_size=6),
    chroma=st.integers(0, 3),
    width=st.integers(16, 8192),  # the window removes at most 12
    height=st.integers(16, 4320),
    window=st.one_of(st.none(), st.tuples(*[st.integers(0, 3)] * 4)),
)
def test_h265_sps_synthetic(
    sub_layers: int,
    flags: list[tuple[bool, bool]],
    chroma: int,
    width: int,
    height: int,
    window: tuple[int, int, int, int] | None,
) -> None:
    w = BitWriter()
    w.u(4, 0)
    w.u(3, sub_layers)
    w.u(1, 1)
    w.u(88, (1 << 80) | 0x60000000)
    w.u(8, 93)
    for profile_present, level_present in flags[:sub_layers]:
        w.u(1, int(profile_present))
        w.u(1, int(level_present))
    if sub_layers:
        w.u(2 * (8 - sub_layers), 0)
    for profile_present, level_present in flags[:sub_layers]:
        if profile_present:
            w.u(88, 0)
        if level_present:
            w.u(8, 90)
    w.ue(0)
    w.ue(chroma)
    if chroma == 3:
        w.u(1, 0)
    w.ue(width)
    w.ue(height)
    w.u(1, window is not None)
    if window is not None:
        for value in window:
            w.ue(value)
    w.ue(0)  # bit_depth_luma_minus8, then the rest is not read
    nal = b"\x42\x01" + escape(w.rbsp())
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma]
    if window is not None:
        width -= sub_w * (window[0] + window[1])
        height -= sub_h * (window[2] + window[3])
    assert parse_h265_sps(nal) == (width, height)


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_truncated_h264_sps_raises(cut: int) -> None:
    with pytest.raises(SpsParseError, match="truncated"):
        parse_h264_sps(H264_SPS[:cut])


@pytest.mark.parametrize("cut", [2, 8, 16, 20])
def test_truncated_h265_sps_raises(cut: int) -> None:
    with pytest.raises(SpsParseError, match="truncated"):
        parse_h265_sps(H265_SPS[:cut])


def test_wrong_nal_type_raises() -> None:
    with pytest.raises(SpsParseError, match="type 7"):
        parse_h264_sps(b"\x68\xce")
    with pytest.raises(SpsParseError, match="type 33"):
        parse_h265_sps(H264_SPS)


@given(st.binary(max_size=64))
def test_arbitrary_sps_bytes_raise_only_sps_parse_error(body: bytes) -> None:
    for parse, nal in ((parse_h264_sps, b"\x67" + body), (parse_h265_sps, b"\x42\x01" + body)):
        try:
            width, height = parse(nal)
        except SpsParseError:
            continue
        assert width > 0 and height > 0


def test_video_size_ignores_a_broken_sps() -> None:
    assert video_size(Codec.H264, b"\x00\x00\x01\x67\x42") is None
    assert video_size(Codec.MPEG4, b"\x00\x00\x01\xb0\x01") is None

"""media.sinks.flv: tag layout byte by byte, and ffprobe / PyAV as real readers."""

from __future__ import annotations

import contextlib
import io
import math
import struct
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codec_info import iter_nals
from media.ps import AccessUnit, Codec
from media.sinks import FlvMuxer, UnsupportedCodec
from media.sinks._config import MAX_CONFIG, ConfigError, avc_config, hevc_config
from tests.unit.media.sinkutil import codecs, ffprobe, pyav_frames, sample_units

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"


def parse_flv(data: bytes) -> tuple[int, list[tuple[int, int, bytes]]]:
    """(header flags, [(tag type, timestamp ms, body)]), checking every PreviousTagSize."""
    assert data[:3] == b"FLV" and data[3] == 1
    assert struct.unpack(">I", data[5:9])[0] == 9
    assert data[9:13] == b"\x00\x00\x00\x00"  # PreviousTagSize0
    tags = []
    pos = 13
    while pos < len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        assert data[pos + 8 : pos + 11] == b"\x00\x00\x00"  # StreamID
        body = data[pos + 11 : pos + 11 + size]
        assert len(body) == size
        prev = struct.unpack(">I", data[pos + 11 + size : pos + 15 + size])[0]
        assert prev == 11 + size
        tags.append((data[pos], ts, body))
        pos += 15 + size
    assert pos == len(data)
    return data[4], tags


def mux_all(muxer: FlvMuxer, units: tuple[AccessUnit, ...]) -> bytes:
    body = b"".join(muxer.mux(u) for u in units)
    return muxer.header() + body


def write(tmp_path: Path, data: bytes, name: str = "out.flv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def length_prefixed(payload: bytes) -> list[bytes]:
    nals = []
    pos = 0
    while pos < len(payload):
        (n,) = struct.unpack(">I", payload[pos : pos + 4])
        nals.append(payload[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(payload)
    return nals


# ---------------------------------------------------------------- real readers


def test_h264_is_read_by_ffprobe_and_pyav(tmp_path: Path) -> None:
    units = sample_units(H264)
    path = write(tmp_path, mux_all(FlvMuxer(Codec.H264), units))
    assert ffprobe(path) == [
        {
            "codec_name": "h264",
            "codec_type": "video",
            "width": 640,
            "height": 360,
            "nb_read_frames": "250",
        }
    ]
    assert pyav_frames(path) == [(640, 360, "h264")] * 250


def test_h264_with_g711a_has_pcm_alaw_8khz(tmp_path: Path) -> None:
    units = sample_units(H264_G711A)
    path = write(tmp_path, mux_all(FlvMuxer(Codec.H264, Codec.PCMA), units))
    video, audio = ffprobe(path)
    assert video["codec_name"] == "h264"
    assert video["nb_read_frames"] == "250"
    # The sample's first audio unit precedes the first keyframe: dropped (rule 1).
    assert audio == {
        "codec_name": "pcm_alaw",
        "codec_type": "audio",
        "sample_rate": "8000",
        "channels": 1,
        "nb_read_frames": "249",
    }
    assert len(pyav_frames(path)) == 250


def test_g711_audio_tag_layout() -> None:
    units = sample_units(H264_G711A)
    for codec, flags in ((Codec.PCMA, 0x72), (Codec.PCMU, 0x82)):
        muxer = FlvMuxer(Codec.H264, codec)
        audio = [replace(u, codec=codec) if u.kind == "audio" else u for u in units]
        header_flags, tags = parse_flv(mux_all(muxer, tuple(audio)))
        assert header_flags == 0x05
        sound = [(ts, body) for t, ts, body in tags if t == 8]
        assert len(sound) == 249
        assert {body[0] for _, body in sound} == {flags}
        assert {len(body) for _, body in sound} == {321}  # 40 ms of 8 kHz G.711 + flags
        assert [ts for ts, _ in sound[:3]] == [40, 80, 120]


def test_h265_enhanced_is_decoded_by_pyav(tmp_path: Path) -> None:
    units = sample_units(H265)
    data = mux_all(FlvMuxer(Codec.H265, hevc_mode="enhanced"), units)
    _, tags = parse_flv(data)
    video = [body for t, _, body in tags if t == 9]
    # ExVideoTagHeader: IsExHeader, FrameType, PacketType; FourCC hvc1.
    assert video[0][:5] == b"\x90hvc1"  # key frame, SequenceStart
    assert {b[1:5] for b in video} == {b"hvc1"}
    assert {b[0] & 0x8F for b in video[2:]} == {0x81}  # CodedFrames
    assert pyav_frames(write(tmp_path, data)) == [(640, 360, "hevc")] * 250


def parse_hvcc(record: bytes) -> dict[str, object]:
    """HEVCDecoderConfigurationRecord fields (ISO/IEC 14496-15 §8.3.3.1)."""
    assert record[0] == 1
    out: dict[str, object] = {
        "profile_idc": record[1] & 0x1F,
        "tier": record[1] >> 5 & 1,
        "compat": record[2:6].hex(),
        "level_idc": record[12],
        "chroma_format": record[16] & 3,
        "bit_depth_luma": (record[17] & 7) + 8,
        "length_size": (record[21] & 3) + 1,
    }
    arrays = {}
    pos = 23
    for _ in range(record[22]):
        nal_type = record[pos] & 0x3F
        (count,) = struct.unpack(">H", record[pos + 1 : pos + 3])
        pos += 3
        nals = []
        for _ in range(count):
            (n,) = struct.unpack(">H", record[pos : pos + 2])
            nals.append(record[pos + 2 : pos + 2 + n])
            pos += 2 + n
        arrays[nal_type] = nals
    assert pos == len(record)
    out["arrays"] = arrays
    return out


def test_h265_codec12_layout_byte_by_byte(tmp_path: Path) -> None:
    units = sample_units(H265)
    data = mux_all(FlvMuxer(Codec.H265), units)
    _, tags = parse_flv(data)
    video = [(ts, body) for t, ts, body in tags if t == 9]
    assert {body[0] & 0x0F for _, body in video} == {12}
    config = video[0][1]
    assert config[:5] == b"\x1c\x00\x00\x00\x00"  # key frame, codec 12, sequence header, CTS 0
    hvcc = parse_hvcc(config[5:])
    params = [n for n in iter_nals(units[0].data) if (n[0] >> 1) & 0x3F in (32, 33, 34)]
    assert (
        hvcc
        == {
            "profile_idc": 1,  # Main
            "tier": 0,
            "compat": "60000000",  # Main and Main 10 compatible
            "level_idc": 63,  # level 2.1
            "chroma_format": 1,
            "bit_depth_luma": 8,
            "length_size": 4,
            "arrays": {32: params[:1], 33: params[1:2], 34: params[2:]},
        }
    )
    frames = [(ts, body) for ts, body in video if body[1] == 1]
    assert len(frames) == 250
    assert [ts for ts, _ in frames[:3]] == [0, 40, 80]
    assert sum(body[0] >> 4 == 1 for _, body in frames) == 10
    for (_, body), unit in zip(frames, units, strict=True):
        nals = length_prefixed(body[5:])
        # Rule 2: parameter sets and AUDs only in the sequence header.
        expected = [n for n in iter_nals(unit.data) if (n[0] >> 1) & 0x3F not in (32, 33, 34, 35)]
        assert nals == expected
    # The FFmpeg in PyAV's wheels also reads the codec-12 convention.
    assert pyav_frames(write(tmp_path, data)) == [(640, 360, "hevc")] * 250


def test_h264_avcc_and_nalus() -> None:
    units = sample_units(H264)
    _, tags = parse_flv(mux_all(FlvMuxer(Codec.H264), units))
    script, config, *frames = tags
    assert script[0] == 18 and b"onMetaData" in script[2]
    assert config[2][:5] == b"\x17\x00\x00\x00\x00"
    sps, pps = (n for n in iter_nals(units[0].data) if n[0] & 0x1F in (7, 8))
    avcc = config[2][5:]
    assert (
        avcc
        == bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
        + struct.pack(">H", len(sps))
        + sps
        + b"\x01"
        + struct.pack(">H", len(pps))
        + pps
    )
    # header() copy of onMetaData + sequence header, then the same in-band (rule 4).
    assert [t[2] for t in frames[:2]] == [script[2], config[2]]
    video = [t for t in frames[2:] if t[0] == 9]
    assert len(video) == 250
    assert [ts for _, ts, _ in video] == [40 * i for i in range(250)]
    for (_, _, body), unit in zip(video, units, strict=True):
        assert body[0] == (0x17 if unit.keyframe else 0x27)
        assert body[1:5] == b"\x01\x00\x00\x00"
        expected = [n for n in iter_nals(unit.data) if n[0] & 0x1F not in (7, 8, 9)]
        assert length_prefixed(body[5:]) == expected


def amf_metadata(body: bytes) -> dict[str, object]:
    assert body[:13] == b"\x02\x00\x0aonMetaData"
    assert body[13] == 8
    (count,) = struct.unpack(">I", body[14:18])
    pos = 18
    out: dict[str, object] = {}
    for _ in range(count):
        (n,) = struct.unpack(">H", body[pos : pos + 2])
        key = body[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        kind = body[pos]
        if kind == 0:
            out[key] = struct.unpack(">d", body[pos + 1 : pos + 9])[0]
            pos += 9
        elif kind == 1:
            out[key] = bool(body[pos + 1])
            pos += 2
        else:
            assert kind == 2
            (n,) = struct.unpack(">H", body[pos + 1 : pos + 3])
            out[key] = body[pos + 3 : pos + 3 + n].decode()
            pos += 3 + n
    assert body[pos:] == b"\x00\x00\x09"
    return out


@pytest.mark.parametrize(
    ("name", "mode", "video_id"),
    [(H264_G711A, "codec12", 7.0), (H265, "codec12", 12.0), (H265, "enhanced", 1752589105.0)],
)
def test_on_metadata(name: str, mode: str, video_id: float) -> None:
    units = sample_units(name)
    video, audio = codecs(units)
    muxer = FlvMuxer(video, audio, hevc_mode="enhanced" if mode == "enhanced" else "codec12")
    assert muxer.header() == b"FLV\x01" + bytes((5 if audio else 1,)) + bytes.fromhex(
        "00000009 00000000"
    )
    for unit in units:
        muxer.mux(unit)
    _, (script, *_) = parse_flv(muxer.header())
    meta = amf_metadata(script[2])
    assert meta["width"] == 640.0 and meta["height"] == 360.0
    assert meta["videocodecid"] == video_id  # enhanced: FourCC 'hvc1' as a number
    if audio:
        assert meta["audiocodecid"] == 7.0 and meta["audiosamplerate"] == 8000.0


# ---------------------------------------------------------------- joining and dropping


@pytest.mark.parametrize("name", [H264, H264_G711A])
def test_joiner_gets_a_readable_stream(name: str, tmp_path: Path) -> None:
    units = sample_units(name)
    video, audio = codecs(units)
    muxer = FlvMuxer(video, audio)
    video_index = [i for i, u in enumerate(units) if u.kind == "video"]
    out = []
    header = b""
    for i, unit in enumerate(units):
        if i == video_index[100]:
            header = muxer.header()  # what a viewer arriving after 100 frames gets first
        out.append(muxer.mux(unit))
    later = next(i for i in video_index[110:] if units[i].keyframe)
    path = write(tmp_path, header + b"".join(out[later:]))
    streams = ffprobe(path)
    frames = sum(1 for u in units[later:] if u.kind == "video")
    assert streams[0]["codec_name"] == "h264"
    assert streams[0]["nb_read_frames"] == str(frames)
    if audio:
        assert streams[1]["codec_name"] == "pcm_alaw"
    assert len(pyav_frames(path)) == frames


def test_nothing_before_the_first_keyframe() -> None:
    units = sample_units(H264_G711A)
    muxer = FlvMuxer(Codec.H264, Codec.PCMA)
    first_key = next(i for i, u in enumerate(units) if u.kind == "video" and u.keyframe)
    p_frames = [u for u in units[first_key:] if u.kind == "video" and not u.keyframe][:5]
    assert [muxer.mux(u) for u in [*p_frames, *units[:first_key]]] == [b""] * (5 + first_key)
    assert muxer.header() == bytes.fromhex("464c5601 05 00000009 00000000")
    assert muxer.mux(units[first_key]).startswith(muxer.header()[13:])


def test_other_codecs_are_dropped_and_unsupported_ones_refused() -> None:
    muxer = FlvMuxer(Codec.H264, Codec.PCMA)
    h265 = sample_units(H265)[0]
    assert muxer.mux(h265) == b""
    assert muxer.mux(AccessUnit("audio", Codec.G729, 0, 0, True, b"\x00" * 20)) == b""
    with pytest.raises(UnsupportedCodec):
        FlvMuxer(Codec.SVAC)
    with pytest.raises(UnsupportedCodec):
        FlvMuxer(Codec.H264, Codec.G722_1)
    with pytest.raises(ValueError):
        FlvMuxer(Codec.H265, hevc_mode="hev1")  # type: ignore[arg-type]  # a bad mode


# ---------------------------------------------------------------- timestamps


def shifted(units: tuple[AccessUnit, ...], start: int) -> list[AccessUnit]:
    """The units with times moved so the first is at ``start`` (33-bit wrap applied)."""
    base = units[0].pts or 0
    return [
        replace(u, pts=(u.pts - base + start) % (1 << 33), dts=(u.dts - base + start) % (1 << 33))
        for u in units
        if u.pts is not None and u.dts is not None
    ]


def video_times(data: bytes) -> list[int]:
    _, tags = parse_flv(data)
    return [ts for t, ts, body in tags if t == 9 and body[1] == 1]


def test_timestamps_survive_the_33_bit_wrap() -> None:
    units = shifted(sample_units(H264)[:50], (1 << 33) - 25 * 3600)
    wrapped, before = units[30].pts, units[20].pts
    assert wrapped is not None and before is not None and wrapped < before  # it does wrap
    muxer = FlvMuxer(Codec.H264)
    assert video_times(mux_all(muxer, tuple(units))) == [40 * i for i in range(50)]


def test_a_large_jump_is_a_discontinuity() -> None:
    units = list(sample_units(H264)[:50])
    late = shifted(tuple(units[25:]), 3600 * 90000)
    muxer = FlvMuxer(Codec.H264)
    times = video_times(mux_all(muxer, (*units[:25], *late)))
    # The clock carries on from the last value: one step of 0 ms, then 40 ms again.
    assert times == [40 * i for i in range(25)] + [960 + 40 * i for i in range(25)]


def test_composition_time_from_pts_minus_dts() -> None:
    key = sample_units(H264)[0]
    muxer = FlvMuxer(Codec.H264)
    muxer.mux(key)
    b_frame = AccessUnit(
        "video", Codec.H264, 90000 + 3 * 3600, 90000 + 3600, False, b"\0\0\1\x41\x9a"
    )
    _, tags = parse_flv(muxer.header() + muxer.mux(b_frame))
    (_, ts, body) = tags[-1]
    assert ts == 40
    assert body[:5] == b"\x27\x01\x00\x00\x50"  # CTS 80 ms


# ---------------------------------------------------------------- parameter sets


def test_changed_parameter_sets_send_a_new_sequence_header() -> None:
    units = sample_units(H264)
    muxer = FlvMuxer(Codec.H264)
    for unit in units[:25]:
        muxer.mux(unit)
    old_header = muxer.header()
    key = units[25]
    assert key.keyframe
    assert muxer.mux(key).startswith(b"\x09")  # same SPS/PPS: just the frame tag
    new_pps = b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    changed = replace(key, data=key.data.replace(b"\x00\x00\x00\x01\x68\xce\x0f\xc8", new_pps))
    assert changed.data != key.data
    _, tags = parse_flv(b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00" + muxer.mux(changed))
    (_, ts, config), (_, _, frame) = tags
    assert ts == 1000 and config[:2] == b"\x17\x00"
    assert config.endswith(b"\x01\x00\x04\x68\xce\x3c\x80")
    assert frame[:2] == b"\x17\x01"
    assert muxer.header() != old_header and muxer.header().endswith(
        config + struct.pack(">I", 11 + len(config))
    )


def test_a_keyframe_without_parameter_sets_waits() -> None:
    key = sample_units(H264)[0]
    bare = replace(
        key, data=b"".join(b"\0\0\0\1" + n for n in iter_nals(key.data) if n[0] & 0x1F == 5)
    )
    muxer = FlvMuxer(Codec.H264)
    assert muxer.mux(bare) == b""
    assert muxer.mux(key) != b""


def test_hvcc_needs_all_three_parameter_sets() -> None:
    with pytest.raises(ConfigError):
        hevc_config((), (b"\x42\x01",), (b"\x44\x01",))
    with pytest.raises(ConfigError):
        hevc_config((b"\x40\x01",), (b"\x42\x01\x01",), (b"\x44\x01",))  # truncated SPS


# ---------------------------------------------------------------- AAC


def aac_units(seconds: float, rate: int = 16000, per_unit: int = 2) -> list[AccessUnit]:
    """Real AAC-LC in ADTS from FFmpeg's encoder, ``per_unit`` frames per access unit."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        samples = int(seconds * rate)
        tone = (np.sin(np.arange(samples) * 2 * math.pi * 440 / rate) * 8000).astype(np.int16)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = buf.getvalue()
    frames = []
    pos = 0
    while pos < len(data):
        size = (data[pos + 3] & 3) << 11 | data[pos + 4] << 3 | data[pos + 5] >> 5
        frames.append(data[pos : pos + size])
        pos += size
    units = []
    for i in range(0, len(frames), per_unit):
        pts = 90000 + i * 1024 * 90000 // rate
        units.append(
            AccessUnit("audio", Codec.AAC, pts, pts, True, b"".join(frames[i : i + per_unit]))
        )
    return units


def interleave(video: tuple[AccessUnit, ...], audio: list[AccessUnit]) -> list[AccessUnit]:
    return sorted([*video, *audio], key=lambda u: (u.pts or 0, u.kind == "video"))


def test_aac_is_read_by_ffprobe(tmp_path: Path) -> None:
    units = interleave(sample_units(H264), aac_units(10.0))
    muxer = FlvMuxer(Codec.H264, Codec.AAC)
    data = mux_all(muxer, tuple(units))
    _, tags = parse_flv(data)
    audio = [body for t, _, body in tags if t == 8]
    assert audio[0] == b"\xaf\x00\x14\x08"  # AAC LC, 16 kHz (index 8), mono
    assert {b[:2] for b in audio[2:]} == {b"\xaf\x01"}
    video, sound = ffprobe(write(tmp_path, data))
    assert video["nb_read_frames"] == "250"
    assert sound["codec_name"] == "aac"
    assert sound["sample_rate"] == "16000" and sound["channels"] == 1
    assert int(str(sound["nb_read_frames"])) >= 150  # 16 kHz / 1024 ≈ 15.6 frames/s


def test_audio_only_aac_starts_at_its_first_unit() -> None:
    units = aac_units(1.0, rate=8000)
    muxer = FlvMuxer(None, Codec.AAC)
    first = muxer.header()
    assert first == bytes.fromhex("464c5601 04 00000009 00000000")
    _, tags = parse_flv(first + b"".join(muxer.mux(u) for u in units))
    assert [t for t, _, _ in tags[:3]] == [18, 8, 8]
    assert tags[1][2] == b"\xaf\x00\x15\x88"  # 8 kHz is index 11
    times = [ts for t, ts, body in tags if t == 8 and body[1] == 1]
    assert times[:4] == [0, 128, 256, 384]  # 1024 samples at 8 kHz = 128 ms


def test_oversized_parameter_sets_are_refused() -> None:
    sps = bytes.fromhex("6742c01eda0280bfe5c044000003000400000300c83c58ba80")
    with pytest.raises(ConfigError, match="larger than"):
        avc_config((sps,), (b"\x68" + b"\xee" * MAX_CONFIG,))
    with pytest.raises(ConfigError):
        avc_config((sps,) * 32, (b"\x68\xce",))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64))
def test_config_builders_raise_only_config_errors(vps: bytes, sps: bytes, pps: bytes) -> None:
    with contextlib.suppress(ConfigError):
        avc_config((sps,), (pps,))
    with contextlib.suppress(ConfigError):
        hevc_config((vps,), (sps,), (pps,))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(max_size=300)).map(
            lambda t: (t[0], b"\x00\x00\x00\x01" + t[1])
        ),
        max_size=8,
    )
)
def test_arbitrary_unit_bytes_give_well_formed_tags(units: list[tuple[bool, bytes]]) -> None:
    key = sample_units(H264)[0]
    for codec, mode in ((Codec.H264, "codec12"), (Codec.H265, "codec12"), (Codec.H265, "enhanced")):
        muxer = FlvMuxer(
            codec, Codec.AAC, hevc_mode="enhanced" if mode == "enhanced" else "codec12"
        )
        out = [muxer.mux(replace(key, codec=codec))]
        for i, (keyframe, data) in enumerate(units):
            out.append(muxer.mux(AccessUnit("video", codec, i * 3600, i * 3600, keyframe, data)))
            out.append(muxer.mux(AccessUnit("audio", Codec.AAC, i * 3600, None, True, data[4:])))
        parse_flv(muxer.header() + b"".join(out))

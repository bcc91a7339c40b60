"""media.sinks.ts: packets checked field by field, PES round trips, ffprobe and PyAV reading."""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import media.sinks.ts as ts_module
from media.ps import AccessUnit, Codec, crc32_mpeg2
from media.sinks import TsMuxer, UnsupportedCodec
from media.sinks.ts import AUDIO_PID, PMT_PID, VIDEO_PID
from tests.unit.media.sinkutil import ffprobe, pyav_frames, sample_units

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"
AUD = {Codec.H264: b"\x00\x00\x00\x01\x09\xf0", Codec.H265: b"\x00\x00\x00\x01\x46\x01\x50"}


# ---------------------------------------------------------------- a small TS reader


@dataclass
class Pes:
    pid: int
    stream_id: int
    pts: int | None
    dts: int | None
    payload: bytes
    random_access: bool
    pcr: int | None


@dataclass
class TsReader:
    """Strict reader: sync bytes, continuity counters, PSI CRCs, PES reassembly."""

    strict_cc: bool = True
    cc: dict[int, int] = field(default_factory=dict)
    tables: list[tuple[int, bytes]] = field(default_factory=list)
    pes: list[Pes] = field(default_factory=list)
    _open: dict[int, tuple[bytearray, bool, int | None]] = field(default_factory=dict)

    def feed(self, data: bytes) -> None:
        assert len(data) % 188 == 0
        for pos in range(0, len(data), 188):
            self._packet(data[pos : pos + 188])

    def _packet(self, pkt: bytes) -> None:
        assert pkt[0] == 0x47
        pusi = bool(pkt[1] & 0x40)
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        assert pkt[3] >> 6 == 0  # not scrambled
        afc = (pkt[3] >> 4) & 3
        cc = pkt[3] & 0x0F
        assert afc in (1, 3)  # every packet has a payload
        if self.strict_cc and pid in self.cc:
            assert cc == (self.cc[pid] + 1) & 15, f"CC jump on PID {pid:#x}"
        self.cc[pid] = cc
        pos = 4
        rai = False
        pcr = None
        if afc == 3:
            length = pkt[4]
            af = pkt[5 : 5 + length]
            pos = 5 + length
            assert pos <= 188
            if length:
                rai = bool(af[0] & 0x40)
                if af[0] & 0x10:
                    base = int.from_bytes(af[1:5], "big") << 1 | af[5] >> 7
                    assert af[5] & 0x7E == 0x7E and af[6] == 0
                    pcr = base
                    stuffing = af[7:]
                else:
                    stuffing = af[1:]
                assert set(stuffing) <= {0xFF}
        payload = pkt[pos:]
        assert payload
        if pid in (0, PMT_PID):
            assert pusi and payload[0] == 0
            length = (payload[2] & 0x0F) << 8 | payload[3]
            section = payload[1 : 4 + length]
            assert crc32_mpeg2(section[:-4]) == struct.unpack(">I", section[-4:])[0]
            assert set(payload[4 + length :]) <= {0xFF}
            self.tables.append((pid, section))
            return
        if pusi:
            self._close(pid)
            self._open[pid] = (bytearray(payload), rai, pcr)
        else:
            assert pid in self._open
            self._open[pid][0].extend(payload)

    def _close(self, pid: int) -> None:
        if pid not in self._open:
            return
        data, rai, pcr = self._open.pop(pid)
        assert data[:3] == b"\x00\x00\x01"
        (length,) = struct.unpack(">H", data[4:6])
        assert length == 0 or length == len(data) - 6
        flags = data[7]
        hl = data[8]
        pts = dts = None
        if flags & 0x80:
            pts = ts_value(data[9:14])
            assert data[9] >> 4 == (3 if flags & 0x40 else 2)
        if flags & 0x40:
            dts = ts_value(data[14:19])
        self.pes.append(Pes(pid, data[3], pts, dts, bytes(data[9 + hl :]), rai, pcr))

    def finish(self) -> list[Pes]:
        for pid in list(self._open):
            self._close(pid)
        return self.pes


def ts_value(b: bytes | bytearray) -> int:
    assert b[0] & 1 and b[2] & 1 and b[4] & 1  # marker bits
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def read_ts(data: bytes, strict_cc: bool = True) -> TsReader:
    reader = TsReader(strict_cc=strict_cc)
    reader.feed(data)
    reader.finish()
    return reader


def mux_all(muxer: TsMuxer, units: tuple[AccessUnit, ...] | list[AccessUnit]) -> bytes:
    body = b"".join(muxer.mux(u) for u in units)
    return muxer.header() + body


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "out.ts"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- real readers


@pytest.mark.parametrize(("name", "codec"), [(H264, "h264"), (H265, "hevc")])
def test_ffprobe_and_pyav_read_it(name: str, codec: str, tmp_path: Path) -> None:
    units = sample_units(name)
    path = write(tmp_path, mux_all(TsMuxer(units[0].codec), units))
    assert ffprobe(path) == [
        {
            "codec_name": codec,
            "codec_type": "video",
            "width": 640,
            "height": 360,
            "nb_read_frames": "250",
        }
    ]
    assert pyav_frames(path) == [(640, 360, codec)] * 250


def test_g711_is_left_out(tmp_path: Path) -> None:
    units = sample_units(H264_G711A)
    muxer = TsMuxer(Codec.H264, Codec.PCMA)
    assert muxer.audio_codec is None
    data = mux_all(muxer, units)
    reader = read_ts(data, strict_cc=False)
    assert {p.pid for p in reader.pes} == {VIDEO_PID}
    (stream,) = ffprobe(write(tmp_path, data))
    assert stream["codec_name"] == "h264" and stream["nb_read_frames"] == "250"


# ---------------------------------------------------------------- packets and tables


@pytest.mark.parametrize("name", [H264, H265])
def test_pes_round_trip_and_packet_fields(name: str) -> None:
    units = sample_units(name)
    codec = units[0].codec
    muxer = TsMuxer(codec)
    body = b"".join(muxer.mux(u) for u in units)
    reader = read_ts(body)
    assert len(reader.pes) == 250
    for pes, unit in zip(reader.pes, units, strict=True):
        assert (pes.pid, pes.stream_id) == (VIDEO_PID, 0xE0)
        assert pes.payload == AUD[codec] + unit.data  # rule 4
        assert pes.pts == unit.pts and pes.dts is None  # no B-frames: PTS only
        assert pes.pcr == unit.dts  # rule 1
        assert pes.random_access == unit.keyframe
    # PAT + PMT before each of the 10 keyframes, nowhere else.
    assert len(reader.tables) == 20
    pat, pmt = reader.tables[0][1], reader.tables[1][1]
    assert pat[0] == 0 and pat[8:12] == struct.pack(">HH", 1, 0xE000 | PMT_PID)
    stream_type = 0x1B if codec == Codec.H264 else 0x24
    assert pmt[0] == 2
    assert pmt[8:12] == struct.pack(">HH", 0xE000 | VIDEO_PID, 0xF000)  # PCR PID, no info
    assert pmt[12:-4] == struct.pack(">BHH", stream_type, 0xE000 | VIDEO_PID, 0xF000)


def test_every_keyframe_output_starts_with_the_tables() -> None:
    units = sample_units(H264)
    muxer = TsMuxer(Codec.H264)
    for unit in units:
        out = muxer.mux(unit)
        pids = [(out[i + 1] & 0x1F) << 8 | out[i + 2] for i in range(0, len(out), 188)]
        if unit.keyframe:
            assert pids[:3] == [0, PMT_PID, VIDEO_PID]
        else:
            assert set(pids) == {VIDEO_PID}


def test_big_units_take_the_numpy_path_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    key = sample_units(H264)[0]
    big = replace(key, data=key.data + b"\x00\x00\x01\x41" + bytes(range(1, 256)) * 800)
    sizes = [replace(key, data=key.data[:n]) for n in (6, 100, 170, 171, 184, 185, 400)]
    units = [big, *sizes, big]
    bulk = mux_all(TsMuxer(Codec.H264), units)
    monkeypatch.setattr(ts_module, "_BULK_PACKETS", 1 << 30)
    loop = mux_all(TsMuxer(Codec.H264), units)
    assert bulk == loop
    reader = read_ts(bulk[376:])  # header() was taken after the units: skip it
    assert [p.payload for p in reader.pes] == [AUD[Codec.H264] + u.data for u in units]


def test_header_before_a_keyframe_leads_into_its_tables() -> None:
    # The hub takes header() just before the mux() of a GOP's keyframe (media/hub.py).
    units = sample_units(H264)
    muxer = TsMuxer(Codec.H264)
    assert read_ts(muxer.header()).cc == {0: 15, PMT_PID: 15}
    for unit in units[:60]:
        header = muxer.header()
        out = muxer.mux(unit)
        if unit.keyframe:
            read_ts(header + out)  # strict CC: no jump on PID 0 or the PMT PID


def test_nothing_before_the_first_keyframe_and_codecs_checked() -> None:
    units = sample_units(H264)
    muxer = TsMuxer(Codec.H264)
    assert [muxer.mux(u) for u in units[1:25]] == [b""] * 24
    assert muxer.mux(sample_units(H265)[0]) == b""
    assert len(muxer.header()) == 376
    with pytest.raises(UnsupportedCodec):
        TsMuxer(Codec.MPEG4)
    with pytest.raises(UnsupportedCodec):
        TsMuxer(Codec.H264, Codec.G729)
    with pytest.raises(UnsupportedCodec):
        TsMuxer(None, Codec.PCMA)


def test_pts_wraps_as_33_bits() -> None:
    key = sample_units(H264)[0]
    late = replace(key, pts=(1 << 33) - 1, dts=(1 << 33) - 3600)
    (pes,) = read_ts(TsMuxer(Codec.H264).mux(late)).finish()
    assert (pes.pts, pes.dts, pes.pcr) == ((1 << 33) - 1, (1 << 33) - 3600, (1 << 33) - 3600)


# ---------------------------------------------------------------- joining


@pytest.mark.parametrize("name", [H264, H265])
def test_joiner_gets_a_readable_stream(name: str, tmp_path: Path) -> None:
    units = sample_units(name)
    muxer = TsMuxer(units[0].codec)
    out = []
    header = b""
    for i, unit in enumerate(units):
        if i == 100:
            header = muxer.header()  # what a viewer arriving after 100 frames gets first
        out.append(muxer.mux(unit))
    later = next(i for i in range(110, 250) if units[i].keyframe)
    path = write(tmp_path, header + b"".join(out[later:]))
    (stream,) = ffprobe(path)
    assert stream["nb_read_frames"] == str(250 - later)
    assert (stream["width"], stream["height"]) == (640, 360)
    assert len(pyav_frames(path)) == 250 - later


# ---------------------------------------------------------------- AAC


def aac_units(seconds: float, rate: int = 16000) -> list[AccessUnit]:
    """Real AAC-LC in ADTS from FFmpeg's encoder, one frame per access unit."""
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
    units: list[AccessUnit] = []
    pos = 0
    while pos < len(data):
        size = (data[pos + 3] & 3) << 11 | data[pos + 4] << 3 | data[pos + 5] >> 5
        pts = 90000 + len(units) * 1024 * 90000 // rate
        units.append(AccessUnit("audio", Codec.AAC, pts, pts, True, data[pos : pos + size]))
        pos += size
    return units


def test_aac_is_read_by_ffprobe(tmp_path: Path) -> None:
    audio = aac_units(10.0)
    units = sorted([*sample_units(H264), *audio], key=lambda u: (u.pts or 0, u.kind == "video"))
    muxer = TsMuxer(Codec.H264, Codec.AAC)
    data = mux_all(muxer, units)
    reader = read_ts(data[376:])
    sound = [p for p in reader.pes if p.pid == AUDIO_PID]
    # The first AAC unit sorts before the first keyframe: dropped (rule 2).
    assert [p.payload for p in sound] == [u.data for u in audio[1:]]
    assert all(p.stream_id == 0xC0 and p.pcr is None for p in sound)
    assert reader.tables[1][1][12:-4] == struct.pack(
        ">BHHBHH", 0x1B, 0xE000 | VIDEO_PID, 0xF000, 0x0F, 0xE000 | AUDIO_PID, 0xF000
    )
    video, aac = ffprobe(write(tmp_path, data))
    assert video["nb_read_frames"] == "250"
    assert aac["codec_name"] == "aac" and aac["sample_rate"] == "16000"


def test_audio_only_aac_repeats_the_tables(tmp_path: Path) -> None:
    audio = aac_units(5.0)
    muxer = TsMuxer(None, Codec.AAC)
    data = mux_all(muxer, audio)
    reader = read_ts(data[376:])
    assert len(reader.tables) == 2 * math.ceil(len(audio) / ts_module.AUDIO_TABLE_INTERVAL)
    assert all(p.pcr == u.pts for p, u in zip(reader.pes, audio, strict=True))
    (aac,) = ffprobe(write(tmp_path, data))
    assert aac["codec_name"] == "aac"


def test_a_time_jump_sets_the_discontinuity_indicator() -> None:
    units = list(sample_units(H264)[:30])
    jump = replace(units[25], pts=5, dts=5)  # a camera restart: time goes back
    muxer = TsMuxer(Codec.H264)
    data = b"".join(muxer.mux(u) for u in [*units[:25], jump, units[26]])
    flags = [
        data[i + 5] for i in range(0, len(data), 188) if data[i + 1] & 0x40 and data[i + 3] & 0x20
    ]
    video_flags = [f for f in flags if f & 0x10]  # first packets carrying a PCR
    assert [bool(f & 0x80) for f in video_flags] == [False] * 25 + [True, False]  # +2 s: no


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=600)), max_size=8))
def test_arbitrary_unit_bytes_give_whole_packets(units: list[tuple[bool, bytes]]) -> None:
    for codec in (Codec.H264, Codec.H265):
        muxer = TsMuxer(codec)
        for i, (key, data) in enumerate(units):
            out = muxer.mux(AccessUnit("video", codec, i * 3600, i * 3600, key, data))
            assert len(out) % 188 == 0
            if out:
                read_ts(out, strict_cc=False)

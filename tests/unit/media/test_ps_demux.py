"""media.ps demuxer: the GB samples, every cut of the stream, and damaged streams.

Damage is made from the real samples with an independent structure walker (``packets``), so
each test states exactly what a device did wrong and what the demuxer must still deliver.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.ps import (
    FAULT_KINDS,
    MAX_HELD_UNITS,
    AccessUnit,
    Codec,
    PsDemuxer,
    PsDemuxError,
    PsMuxer,
)

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"
SAMPLES = (H264, H265, H264_G711A)


@cache
def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def packets(data: bytes) -> list[bytes]:
    """Split a clean PS stream into its structures by their lengths (test-side walker)."""
    out = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 3] == b"\x00\x00\x01", pos
        sid = data[pos + 3]
        if sid == 0xBA:
            size = 14 + (data[pos + 13] & 7)
        elif sid == 0xB9:
            size = 4
        else:
            size = 6 + struct.unpack_from(">H", data, pos + 4)[0]
        out.append(data[pos : pos + size])
        pos += size
    return out


def demux(
    chunks: Iterable[bytes], demuxer: PsDemuxer | None = None, *, flush: bool = True
) -> list[AccessUnit]:
    """Feed chunks, draining after each feed as a receiver would."""
    d = demuxer or PsDemuxer()
    out: list[AccessUnit] = []
    for chunk in chunks:
        d.feed(chunk)
        out.extend(d.pop_units())
    if flush:
        d.flush()
        out.extend(d.pop_units())
    return out


def faults(d: PsDemuxer) -> dict[str, int]:
    return {k: v for k, v in d.stats.faults().items() if v}


@cache
def reference(name: str) -> tuple[AccessUnit, ...]:
    return tuple(demux([sample(name)], PsDemuxer(max_units=100_000)))


# ---------------------------------------------------------------- the samples


@pytest.mark.parametrize(
    ("name", "codec"), [(H264, Codec.H264), (H265, Codec.H265), (H264_G711A, Codec.H264)]
)
def test_sample_frames(name: str, codec: Codec) -> None:
    d = PsDemuxer(max_units=100_000)
    units = demux([sample(name)], d)
    video = [u for u in units if u.kind == "video"]
    assert len(video) == 250
    assert [i for i, u in enumerate(video) if u.keyframe] == list(range(0, 250, 25))
    assert {u.codec for u in video} == {codec}
    assert [u.pts for u in video] == [90000 + 3600 * i for i in range(250)]
    assert all(u.dts == u.pts for u in video)
    assert all(u.data.startswith(b"\x00\x00\x00\x01") for u in video)
    assert d.video_codec == codec
    assert faults(d) == {}
    assert d.stats.video_units == 250


def test_sample_with_g711a_audio() -> None:
    d = PsDemuxer(max_units=100_000)
    units = demux([sample(H264_G711A)], d)
    audio = [u for u in units if u.kind == "audio"]
    assert len(audio) == 250
    assert {(u.codec, u.keyframe, len(u.data)) for u in audio} == {(Codec.PCMA, True, 320)}
    assert [u.pts for u in audio] == [90000 + 3600 * i for i in range(250)]
    # Stream order: the audio pack of each 40 ms precedes its video pack. The first audio
    # pack comes before the first PSM, so it was held until the PSM named it.
    assert [u.kind for u in units[:4]] == ["audio", "video", "audio", "video"]
    assert d.audio_codec == Codec.PCMA
    assert faults(d) == {}


def test_end_code_ends_the_last_frame_without_flush() -> None:
    d = PsDemuxer(max_units=100_000)
    units = demux([sample(H264)], d, flush=False)
    assert len(units) == 250


def test_output_queue_is_bounded() -> None:
    d = PsDemuxer(max_units=16)
    d.feed(sample(H264))
    assert len(d.pop_units()) == 16
    assert d.stats.overflow == 250 - 16  # the end code ended the last frame
    assert d.next_unit() is None


# ---------------------------------------------------------------- any cut of the stream


@pytest.mark.parametrize("name", SAMPLES)
def test_rtp_sized_payloads(name: str) -> None:
    data = sample(name)
    assert demux(data[i : i + 1400] for i in range(0, len(data), 1400)) == list(reference(name))


def test_byte_by_byte() -> None:
    data = sample(H264_G711A)
    units = demux(data[i : i + 1] for i in range(len(data)))
    assert units == list(reference(H264_G711A))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SAMPLES), data=st.data())
def test_random_splits_give_the_same_units(name: str, data: st.DataObject) -> None:
    ps = sample(name)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(ps) - 1), max_size=400)))
    # Also cut inside start codes: right after a 00, 00 00 or 00 00 01.
    starts = [i for i in range(0, len(ps) - 4) if ps[i : i + 3] == b"\x00\x00\x01"][:200]
    cuts = sorted({*cuts, *(s + data.draw(st.integers(1, 3)) for s in starts[::7])})
    chunks = [ps[a:b] for a, b in zip([0, *cuts], [*cuts, len(ps)], strict=True)]
    d = PsDemuxer(max_units=100_000)  # a chunk may hold the rest of the file
    units = demux(chunks, d)
    assert units == list(reference(name))
    video = [u for u in units if u.kind == "video"]
    assert len(video) == 250 and sum(u.keyframe for u in video) == 10
    audio = [u for u in units if u.kind == "audio"]
    assert len(audio) == (250 if name == H264_G711A else 0)
    assert all(u.codec == Codec.PCMA for u in audio)
    assert faults(d) == {}


def test_rtp_timestamp_change_ends_a_frame_without_pts() -> None:
    # A PES without PTS takes the RTP timestamp, and a new timestamp ends its frame, even
    # with no pack header between frames.
    mux = PsMuxer(video_codec=Codec.H264)
    key = AccessUnit("video", Codec.H264, None, None, True, b"\x00\x00\x00\x01\x65\x88")
    p_frame = AccessUnit("video", Codec.H264, None, None, False, b"\x00\x00\x00\x01\x41\x9a")
    d = PsDemuxer()
    d.feed(mux.mux(key), rtp_timestamp=90000)
    assert d.next_unit() is None
    d.feed(packets(mux.mux(p_frame))[-1], rtp_timestamp=93600)  # the PES alone
    assert d.pop_units() == [replace(key, pts=90000, dts=90000)]
    d.flush()
    assert d.pop_units() == [replace(p_frame, pts=93600, dts=93600)]


def test_rtp_timestamp_change_does_not_split_a_frame_with_pts() -> None:
    # 2016 devices may stamp packets of one frame differently; the PES PTS decides.
    data = sample(H264)
    d = PsDemuxer()
    for i in range(0, len(data), 1000):
        d.feed(data[i : i + 1000], rtp_timestamp=i)
    d.flush()
    assert d.pop_units()[:200] == list(reference(H264))[:200]


# ---------------------------------------------------------------- damaged streams


def rebuild(name: str, change: Callable[[bytes], list[bytes]]) -> bytes:
    return b"".join(out for p in packets(sample(name)) for out in change(p))


def test_missing_psm_sniffs_the_codec() -> None:
    data = rebuild(H264, lambda p: [] if p[3] == 0xBC else [p])
    d = PsDemuxer()
    units = demux([data[i : i + 1400] for i in range(0, len(data), 1400)], d)
    assert units == list(reference(H264))  # same codec, keyframes and data
    assert d.video_codec == Codec.H264
    assert faults(d) == {"no_psm": 10}  # one per keyframe


def test_missing_psm_with_audio_releases_unknown_audio() -> None:
    data = rebuild(H264_G711A, lambda p: [] if p[3] == 0xBC else [p])
    d = PsDemuxer()
    units = demux([data[i : i + 1400] for i in range(0, len(data), 1400)], d)
    ref = reference(H264_G711A)
    assert [(u.kind, u.pts, u.data) for u in units] == [(u.kind, u.pts, u.data) for u in ref]
    assert {u.codec for u in units if u.kind == "audio"} == {Codec.UNKNOWN}
    assert {u.codec for u in units if u.kind == "video"} == {Codec.H264}
    assert d.stats.no_psm == 10 + 1  # the keyframes, and giving up on the audio codec
    assert d.audio_codec is None


def test_psm_arriving_late_names_the_held_audio() -> None:
    # The first GOP comes without PSM: its audio is held (up to MAX_HELD_UNITS) until the
    # second keyframe's PSM names it; the first GOP's video codec is sniffed meanwhile.
    keyframes = 0

    def drop_first_psm(p: bytes) -> list[bytes]:
        nonlocal keyframes
        if p[3] == 0xBC:
            keyframes += 1
            if keyframes == 1:
                return []
        return [p]

    data = rebuild(H264_G711A, drop_first_psm)
    assert MAX_HELD_UNITS > 2 * 25
    d = PsDemuxer()
    units = demux([data[i : i + 1400] for i in range(0, len(data), 1400)], d)
    assert units == list(reference(H264_G711A))
    assert faults(d) == {"no_psm": 1}


def test_zero_length_video_pes_is_read_to_the_next_start_code() -> None:
    def zero(p: bytes) -> list[bytes]:
        return [p[:4] + b"\x00\x00" + p[6:]] if p[3] == 0xE0 else [p]

    for name in (H264, H264_G711A):
        d = PsDemuxer()
        data = rebuild(name, zero)
        assert demux([data[i : i + 1000] for i in range(0, len(data), 1000)], d) == list(
            reference(name)
        )
        assert faults(d) == {}


def test_garbage_between_packs_is_skipped_and_counted() -> None:
    rng = random.Random(5)
    junk = [bytes(rng.randrange(4, 256) for _ in range(rng.randrange(1, 300))) for _ in range(9)]
    count = 0

    def insert(p: bytes) -> list[bytes]:
        nonlocal count
        if p[3] == 0xBA and count < len(junk) and rng.random() < 0.05:
            count += 1
            return [junk[count - 1], p]
        return [p]

    d = PsDemuxer()
    data = rebuild(H264, insert)
    assert demux([data[i : i + 1400] for i in range(0, len(data), 1400)], d) == list(
        reference(H264)
    )
    assert faults(d) == {"garbage": count}
    assert d.stats.garbage_bytes == sum(map(len, junk[:count]))
    assert isinstance(d.last_error, PsDemuxError)
    assert d.last_error.kind == "garbage"


def test_non_ps_start_codes_are_garbage() -> None:
    d = PsDemuxer()
    pk = packets(sample(H264))
    units = demux([b"".join(pk[:10]) + b"\x00\x00\x01\x41xx" + b"".join(pk[10:])], d)
    assert units == list(reference(H264))
    assert faults(d) == {"garbage": 1}


def test_truncated_pes_drops_its_frame_only() -> None:
    victim = 40  # frame index whose single PES loses its tail

    seen = -1

    def cut(p: bytes) -> list[bytes]:
        nonlocal seen
        if p[3] == 0xBA:
            seen += 1
        if p[3] == 0xE0 and seen == victim:
            return [p[: len(p) // 2]]
        return [p]

    d = PsDemuxer()
    units = demux([rebuild(H264, cut)], d)
    ref = reference(H264)
    assert units == [u for i, u in enumerate(ref) if i != victim]
    assert faults(d) == {"truncated": 1}
    assert d.last_error is not None and d.last_error.offset > 0


def test_truncated_psm_is_counted() -> None:
    data = rebuild(H264, lambda p: [p[:12]] if p[3] == 0xBC else [p])
    d = PsDemuxer()
    units = demux([data], d)
    # The PES after each cut PSM is found again; the codec is sniffed instead.
    assert units == list(reference(H264))
    assert faults(d) == {"truncated": 10, "no_psm": 10}


def test_loss_drops_the_partial_frame_and_resyncs() -> None:
    data = sample(H264)
    chunks = [data[i : i + 1400] for i in range(0, len(data), 1400)]
    lost = 30
    d = PsDemuxer()
    out: list[AccessUnit] = []
    for i, chunk in enumerate(chunks):
        if i == lost:
            d.notify_loss()
            continue
        d.feed(chunk)
        out.extend(d.pop_units())
    d.flush()
    out.extend(d.pop_units())
    ref = list(reference(H264))
    start = len(b"".join(chunks[:lost]))
    end = start + len(chunks[lost])
    offsets = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xba", i)]
    # Frames overlapping the lost bytes, or whose pack began in the lost chunk, are gone.
    gone = {
        k
        for k, (a, b) in enumerate(zip(offsets, [*offsets[1:], len(data)], strict=True))
        if a < end and b > start
    }
    assert gone
    assert out == [u for k, u in enumerate(ref) if k not in gone]
    assert faults(d) == {"loss": 1}


def test_mpeg1_pack_header_is_rejected_until_the_next_pack() -> None:
    victim = 7
    seen = -1

    def mpeg1(p: bytes) -> list[bytes]:
        nonlocal seen
        if p[3] == 0xBA:
            seen += 1
            if seen == victim:
                return [p[:4] + bytes([0x21]) + p[5:]]
        return [p]

    d = PsDemuxer()
    units = demux([rebuild(H264, mpeg1)], d)
    assert units == [u for i, u in enumerate(reference(H264)) if i != victim]
    assert faults(d) == {"bad_pack": 1}
    assert d.last_error is not None and "MPEG-1" in d.last_error.reason


def test_private_padding_and_unknown_streams_are_skipped() -> None:
    extra = [
        b"\x00\x00\x01\xbd\x00\x05HIK\x00\x01",  # Hikvision private data
        b"\x00\x00\x01\xbe\x00\x08" + b"\xff" * 8,  # padding
        b"\x00\x00\x01\xbf\x00\x02\x00\x00",  # private_stream_2
        b"\x00\x00\x01\xe2\x00\x08\x80\x00\x00\x00\x00\x00\x01\x65",  # a second video stream
    ]

    packs = 0

    def add(p: bytes) -> list[bytes]:
        # At the end of every pack, so after the first PSM has named the streams.
        nonlocal packs
        if p[3] == 0xBA:
            packs += 1
        return [*extra, p] if p[3] == 0xB9 or (p[3] == 0xBA and packs > 1) else [p]

    d = PsDemuxer()
    assert demux([rebuild(H264, add)], d) == list(reference(H264))
    assert d.stats.skipped_packets == 3 * 250 + 10  # plus the 10 system headers
    assert d.stats.other_stream == 250
    assert faults(d) == {}


def test_oversize_frame_is_dropped_up_to_the_next_pack() -> None:
    ref = reference(H264)
    cap = max(len(u.data) for u in ref if not u.keyframe) + 1
    d = PsDemuxer(max_frame=cap)
    units = demux([sample(H264)], d)
    big = [u for u in ref if len(u.data) > cap]
    assert big and all(u.keyframe for u in big)
    assert units == [u for u in ref if len(u.data) <= cap]
    assert faults(d) == {"oversize": len(big)}


def test_bad_pes_header_is_counted() -> None:
    victim = 3
    seen = -1

    def break_header(p: bytes) -> list[bytes]:
        nonlocal seen
        if p[3] == 0xE0:
            seen += 1
            if seen == victim:
                return [p[:6] + b"\x40" + p[7:]]  # '01' marker: not MPEG-2
        return [p]

    d = PsDemuxer()
    units = demux([rebuild(H264, break_header)], d)
    assert units == [u for i, u in enumerate(reference(H264)) if i != victim]
    assert faults(d) == {"bad_pes": 1}


def test_bad_psm_is_counted_and_ignored() -> None:
    def break_psm(p: bytes) -> list[bytes]:
        if p[3] == 0xBC:
            return [p[:10] + b"\xff\xff" + p[12:]]  # elementary_stream_map_length overruns
        return [p]

    d = PsDemuxer()
    units = demux([rebuild(H264, break_psm)], d)
    assert [(u.data, u.keyframe, u.codec) for u in units] == [
        (u.data, u.keyframe, u.codec) for u in reference(H264)
    ]
    assert faults(d) == {"bad_psm": 10, "no_psm": 10}


def test_psm_crc_is_not_checked() -> None:
    # Dahua writes a wrong CRC; the map is used anyway.
    d = PsDemuxer()
    data = rebuild(H264, lambda p: [p[:-4] + b"\x00\x00\x00\x00"] if p[3] == 0xBC else [p])
    assert demux([data], d) == list(reference(H264))
    assert faults(d) == {}


def test_mpeg_ts_is_recognised() -> None:
    d = PsDemuxer()
    d.feed((b"\x47\x40\x00\x10" + b"\xff" * 184) * 7)
    d.feed((b"\x47\x40\x00\x11" + b"\xff" * 184) * 7)
    assert d.stats.mpeg_ts == 1
    assert d.pop_units() == []


# ---------------------------------------------------------------- timing


def test_pes_without_pts_takes_the_rtp_timestamp() -> None:
    mux = PsMuxer(video_codec=Codec.H264)
    unit = AccessUnit("video", Codec.H264, None, None, True, b"\x00\x00\x00\x01\x65\x88\x84")
    d = PsDemuxer()
    d.feed(mux.mux(unit), rtp_timestamp=123456)
    d.flush()
    out = d.pop_units()
    assert [(u.pts, u.dts) for u in out] == [(123456, 123456)]


def test_new_pts_starts_a_new_frame_within_a_pack() -> None:
    mux = PsMuxer(video_codec=Codec.H264)
    a = AccessUnit("video", Codec.H264, 1000, 1000, True, b"\x00\x00\x00\x01\x65\x88")
    b = AccessUnit("video", Codec.H264, 4600, 4600, False, b"\x00\x00\x00\x01\x41\x9a")
    pack_a = mux.mux(a)
    pes_b = packets(mux.mux(b))[-1]
    assert demux([pack_a + pes_b]) == [a, b]


def test_pts_and_dts_are_read() -> None:
    unit = AccessUnit("video", Codec.H264, 903600, 900000, True, b"\x00\x00\x00\x01\x65\x88")
    out = demux([PsMuxer().mux(unit)])
    assert out == [unit]


# ---------------------------------------------------------------- hostile input


def test_fault_kinds_are_stats_fields() -> None:
    d = PsDemuxer()
    assert set(d.stats.faults()) == set(FAULT_KINDS)
    assert set(FAULT_KINDS) <= set(d.stats.as_dict())
    assert issubclass(PsDemuxError, ValueError)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=600), max_size=12), st.booleans())
def test_arbitrary_bytes_never_raise(chunks: list[bytes], with_pack: bool) -> None:
    d = PsDemuxer(max_frame=4096)
    if with_pack:  # get past the initial search for a pack header
        d.feed(packets(sample(H264))[0])
    for chunk in chunks:
        d.feed(chunk)
        d.pop_units()
        assert len(d._buf) <= 6 + 0xFFFF + 600  # the cap is the point of the test
    d.flush()
    for unit in d.pop_units():
        assert unit.data


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60000), st.integers(0, 255)), min_size=1, max_size=40),
    st.integers(1, 3000),
)
def test_corrupted_sample_never_raises(flips: list[tuple[int, int]], step: int) -> None:
    data = bytearray(sample(H264_G711A)[:60000])
    for pos, value in flips:
        data[pos % len(data)] = value
    d = PsDemuxer()
    units = demux((bytes(data[i : i + step]) for i in range(0, len(data), step)), d)
    assert len(units) <= 300
    assert d.stats.video_units + d.stats.audio_units == len(units)
    assert Counter(u.kind for u in units)["video"] <= 150


@settings(max_examples=50)
@given(st.binary(min_size=1, max_size=2000), st.integers(1, 50))
def test_garbage_keeps_the_buffer_small(junk: bytes, repeat: int) -> None:
    d = PsDemuxer()
    d.feed(packets(sample(H264))[0])
    for _ in range(repeat):
        d.feed(junk.replace(b"\x00\x00\x01", b"\x00\x01\x01"))
        assert len(d._buf) <= 3  # the cap is the point of the test


# ---------------------------------------------------------------- the RTP marker bit


def rtp_frames(data: bytes, size: int = 1400) -> list[list[bytes]]:
    """The stream as RTP payloads, one list per pack (one frame: what senders mark)."""
    starts = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xba", i)]
    packs = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    return [[p[i : i + size] for i in range(0, len(p), size)] for p in packs]


def feed_marked(
    frames: list[list[bytes]], d: PsDemuxer, mark: Callable[[int, int], bool]
) -> tuple[list[AccessUnit], list[int]]:
    """Feed with ``mark(frame, packet)`` as the marker; also which frame each unit left at."""
    out: list[AccessUnit] = []
    left_at: list[int] = []
    for f, payloads in enumerate(frames):
        for p, payload in enumerate(payloads):
            d.feed(payload, None, mark(f, p))
            got = d.pop_units()
            out.extend(got)
            left_at.extend([f] * len(got))
    d.flush()
    out.extend(d.pop_units())
    return out, left_at


@pytest.mark.parametrize("name", SAMPLES)
def test_marker_ends_the_frame_at_its_last_packet_once_learnt(name: str) -> None:
    frames = rtp_frames(sample(name))
    d = PsDemuxer(max_units=100_000)
    units, left_at = feed_marked(frames, d, lambda f, p: p == len(frames[f]) - 1)
    assert units == list(reference(name))  # the same units, only sooner
    video_packs = [f for f, pk in enumerate(frames) if pk[0].find(b"\x00\x00\x01\xe0") >= 0]
    video_left = [at for u, at in zip(units, left_at, strict=False) if u.kind == "video"]
    # Learning: the first frames still wait for the next pack header; then each video frame
    # leaves with its own last packet instead of one frame interval later.
    assert video_left[5:] == video_packs[5 : len(video_left)]
    assert video_left[:2] != video_packs[:2]
    assert d.stats.marker_frames >= 250 - 5
    assert d.stats.marker_distrusted == 0
    assert faults(d) == {}


def test_marker_inside_a_pes_is_ignored() -> None:
    frames = rtp_frames(sample(H264))
    d = PsDemuxer(max_units=100_000)
    units, _ = feed_marked(frames, d, lambda f, p: True)
    assert units == list(reference(H264))  # a half-read PES never ends a frame
    assert d.stats.marker_distrusted == 0


def split_video_pes(p: bytes) -> list[bytes]:
    """Two PES with the same header (so the same PTS) for each video PES."""
    if p[3] != 0xE0:
        return [p]
    head = p[6 : 9 + p[8]]
    body = p[9 + p[8] :]
    half = len(body) // 2
    return [
        p[:4] + struct.pack(">H", len(head) + len(part)) + head + part
        for part in (body[:half], body[half:])
    ]


def test_marker_at_a_pes_boundary_inside_a_frame_is_distrusted_while_learning() -> None:
    data = rebuild(H264, split_video_pes)
    # One RTP payload per PS structure, each marked: the marker comes mid-frame, at a clean
    # PES boundary, so only the frame going on can tell it was false.
    payloads = packets(data)
    d = PsDemuxer(max_units=100_000)
    units, _ = feed_marked([payloads], d, lambda f, p: True)
    assert units == list(reference(H264))  # nothing was split
    assert d.stats.marker_distrusted == 1
    assert d.stats.marker_frames == 0


def test_a_marker_lying_after_trust_costs_one_frame_then_is_ignored() -> None:
    data = rebuild(H264, split_video_pes)
    frames: list[list[bytes]] = []
    for structure in packets(data):  # one RTP payload per structure, grouped per pack
        if structure[3] == 0xBA:
            frames.append([])
        frames[-1].append(structure)
    big = 20
    first_half = frames[big].index(next(x for x in frames[big] if x[3] == 0xE0))
    d = PsDemuxer(max_units=100_000)
    units, _ = feed_marked(
        frames, d, lambda f, p: p == len(frames[f]) - 1 or (f, p) == (big, first_half)
    )
    ref = list(reference(H264))
    assert d.stats.marker_distrusted == 1
    # The frame the false marker cut comes out in two pieces; every other frame is intact.
    assert len(units) == len(ref) + 1
    assert units[:big] == ref[:big] and units[big + 2 :] == ref[big + 1 :]
    assert units[big].data + units[big + 1].data == ref[big].data
    assert d.stats.marker_frames == big - 3 + 1  # frames 3..big-1, and the false cut


def test_marker_with_zero_length_video_pes() -> None:
    def zero(p: bytes) -> list[bytes]:
        return [p[:4] + b"\x00\x00" + p[6:]] if p[3] == 0xE0 else [p]

    data = rebuild(H264, zero)
    for size in (1400, 997):  # 997: the held-back start-code bytes fall inside packets
        frames = rtp_frames(data, size)
        d = PsDemuxer(max_units=100_000)
        last = [len(pk) - 1 for pk in frames]
        units, left_at = feed_marked(frames, d, lambda f, p, last=last: p == last[f])
        assert units == list(reference(H264))
        assert left_at[10:] == list(range(10, 250))
        assert d.stats.marker_distrusted == 0

"""media.rtp: packet parse/serialise, receive state (wrap, reorder, loss, SSRC), packetizer,
RFC 4571 framing. No sockets, no clock: ``now`` is a float the test moves."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    MAX_DROPOUT,
    Rfc4571Decoder,
    RtpPacket,
    RtpPacketizer,
    RtpParseError,
    RtpReceiverState,
    frame_rfc4571,
)

SSRC = 200001234  # y=0200001234, PROTOCOL §1.4

# ---------------------------------------------------------------- packets


def test_parse_protocol_example() -> None:
    first = RtpPacket.parse(bytes.fromhex("80601234000dbba00bebc6d2") + b"PS")
    assert first == RtpPacket(96, 0x1234, 900000, SSRC, b"PS", marker=False)
    last = RtpPacket.parse(bytes.fromhex("80e01235000dbba00bebc6d2") + b"!")
    assert last.marker and last.sequence_number == 0x1235 and last.payload == b"!"


def test_serialize_matches_wire_bytes() -> None:
    wire = bytes.fromhex("80e01235000dbba00bebc6d2") + b"frame"
    packet = RtpPacket.parse(wire)
    assert bytes(packet) == wire
    assert packet.serialize() == wire


def test_parse_csrc_extension_and_padding() -> None:
    header = struct.pack(">BBHII", 0x80 | 0x20 | 0x10 | 2, 96, 7, 3600, SSRC)
    csrc = struct.pack(">II", 11, 22)
    extension = struct.pack(">HH", 0xBEDE, 2) + b"\x01" * 8
    wire = header + csrc + extension + b"payload" + b"\x00\x00\x03"
    packet = RtpPacket.parse(wire)
    assert packet.csrc == (11, 22)
    assert packet.payload == b"payload"
    # Extension and padding are consumed, not kept: re-serialising drops them.
    assert RtpPacket.parse(bytes(packet)) == packet


def test_parse_accepts_bytearray_and_memoryview() -> None:
    wire = bytes.fromhex("80601234000dbba00bebc6d2") + b"xyz"
    assert RtpPacket.parse(bytearray(wire)) == RtpPacket.parse(memoryview(wire))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x80\x60\x00", "truncated: 3 bytes"),
        (bytes.fromhex("40601234000dbba00bebc6d2"), "version is 1"),
        (bytes.fromhex("a0601234000dbba00bebc6d2") + b"ab\x00", "padding length is 0"),
        (bytes.fromhex("a0601234000dbba00bebc6d2") + b"ab\x09", "overlaps the header"),
        (bytes.fromhex("82601234000dbba00bebc6d2") + b"\x00" * 4, "CSRC list of 2"),
        (bytes.fromhex("90601234000dbba00bebc6d2") + b"\xbe\xde", "extension header"),
        (bytes.fromhex("90601234000dbba00bebc6d2") + b"\xbe\xde\x00\x02\x00", "of 2 words"),
    ],
)
def test_parse_errors_are_precise(wire: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(wire)


def test_rtp_parse_error_is_value_error() -> None:
    assert issubclass(RtpParseError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"sequence_number": 65536},
        {"timestamp": -1},
        {"ssrc": 1 << 32},
        {"csrc": tuple(range(16))},
    ],
)
def test_packet_fields_are_validated(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"payload_type": 96, "sequence_number": 0, "timestamp": 0}
    fields["ssrc"] = SSRC
    fields.update(kwargs)
    with pytest.raises(ValueError):
        RtpPacket(**fields)  # type: ignore[arg-type]  # fields built as a dict on purpose


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=1500),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
)


@given(packets)
def test_parse_serialize_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert len(packet.serialize()) <= len(data)


# ---------------------------------------------------------------- receiver state


def pkt(seq: int, *, ssrc: int = SSRC, ts: int = 0, payload: bytes = b"") -> RtpPacket:
    return RtpPacket(96, seq & 0xFFFF, ts, ssrc, payload or seq.to_bytes(4, "big"))


def drain(state: RtpReceiverState) -> list[int]:
    out = []
    while (packet := state.pop()) is not None:
        out.append(packet.sequence_number)
    return out


def test_in_order_packets_pass_straight_through() -> None:
    state = RtpReceiverState(SSRC)
    assert state.highest_sequence is None
    for i, seq in enumerate(range(10, 20)):
        state.push(pkt(seq), now=i * 0.01)
        assert state.next_deadline() is None
    assert drain(state) == list(range(10, 20))
    assert state.stats.received == 10
    assert state.stats.lost == state.stats.reordered == 0
    assert not state.last_discontinuity


def test_reordered_packet_is_held_then_released_in_order() -> None:
    state = RtpReceiverState(SSRC)
    state.push(pkt(1), 0.0)
    state.push(pkt(3), 0.5)
    state.push(pkt(4), 0.52)
    assert drain(state) == [1]
    assert state.next_deadline() == 0.6  # the oldest held packet + max_wait
    state.push(pkt(2), 0.55)
    assert drain(state) == [2, 3, 4]
    assert state.next_deadline() is None
    assert state.stats.reordered == 1
    assert state.stats.lost == 0
    assert not state.last_discontinuity


def test_deadline_skips_the_gap_and_counts_the_loss() -> None:
    state = RtpReceiverState(SSRC, max_wait=0.1)
    state.push(pkt(100), 0.0)
    state.push(pkt(102), 0.5)
    state.push(pkt(103), 0.55)
    assert drain(state) == [100]
    assert state.next_deadline() == 0.6
    state.handle_timer(0.59)
    assert drain(state) == []
    state.handle_timer(0.6)
    assert state.pop() == pkt(102)
    assert state.last_discontinuity
    assert state.pop() == pkt(103)
    assert not state.last_discontinuity
    assert state.stats.lost == 1
    assert state.next_deadline() is None
    # The lost packet arriving afterwards is late, not a duplicate, and is dropped.
    state.push(pkt(101), 0.7)
    assert drain(state) == []
    assert state.stats.late == 1 and state.stats.duplicate == 0


def test_window_overflow_skips_without_waiting() -> None:
    state = RtpReceiverState(SSRC, window=8)
    state.push(pkt(0), 0.0)
    for seq in range(2, 9):  # 7 held behind the gap at 1
        state.push(pkt(seq), 0.0)
    assert drain(state) == [0]
    state.push(pkt(9), 0.0)  # 9 - 1 >= window: give up on 1
    assert drain(state) == list(range(2, 10))
    assert state.stats.lost == 1


def test_duplicates_are_counted_and_dropped() -> None:
    state = RtpReceiverState(SSRC)
    state.push(pkt(5), 0.0)
    state.push(pkt(5), 0.0)
    state.push(pkt(7), 0.0)
    state.push(pkt(7), 0.0)
    assert state.stats.duplicate == 2
    state.push(pkt(6), 0.0)
    assert drain(state) == [5, 6, 7]


def test_sequence_wrap_is_extended() -> None:
    state = RtpReceiverState(SSRC)
    seqs = [65533, 65534, 65535, 0, 1, 2]
    for seq in seqs:
        state.push(pkt(seq), 0.0)
    assert drain(state) == seqs
    assert state.highest_sequence == 65536 + 2
    state.push(pkt(3), 0.0)
    assert state.highest_sequence == 65536 + 3
    assert state.stats.lost == 0


def test_reordering_across_the_wrap() -> None:
    state = RtpReceiverState(SSRC)
    state.push(pkt(65534), 0.0)
    state.push(pkt(0), 0.01)
    state.push(pkt(65535), 0.02)
    state.push(pkt(1), 0.03)
    assert drain(state) == [65534, 65535, 0, 1]
    assert state.stats.reordered == 1


def test_first_ssrc_is_latched_and_others_dropped() -> None:
    state = RtpReceiverState()
    state.push(pkt(1, ssrc=42), 0.0)
    assert state.ssrc == 42
    state.push(pkt(2, ssrc=43), 0.0)
    state.push(pkt(3, ssrc=43), 0.0)
    assert drain(state) == [1]
    assert state.stats.ssrc_mismatch == 2


def test_ssrc_tolerant_follows_the_device_and_counts_once() -> None:
    # Hikvision answers with another y=; the stream is bound by its port.
    state = RtpReceiverState(SSRC, ssrc_tolerant=True)
    state.push(pkt(1000, ssrc=703001718), 0.0)
    for seq in range(1001, 1005):
        state.push(pkt(seq, ssrc=703001718), 0.0)
    assert drain(state) == list(range(1000, 1005))
    assert state.ssrc == 703001718
    assert state.stats.ssrc_mismatch == 1


def test_ssrc_switch_mid_stream_restarts_and_flags_discontinuity() -> None:
    state = RtpReceiverState(ssrc_tolerant=True)
    state.push(pkt(10, ssrc=1), 0.0)
    state.push(pkt(11, ssrc=1), 0.0)
    state.push(pkt(40000, ssrc=2), 0.1)
    state.push(pkt(40001, ssrc=2), 0.1)
    assert state.pop() == pkt(10, ssrc=1)
    assert state.pop() == pkt(11, ssrc=1)
    assert state.pop() == pkt(40000, ssrc=2)
    assert state.last_discontinuity
    assert state.pop() == pkt(40001, ssrc=2)
    assert state.stats.ssrc_mismatch == 1


def test_sequence_restart_needs_two_consecutive_packets() -> None:
    state = RtpReceiverState(SSRC)
    for seq in range(100, 105):
        state.push(pkt(seq), 0.0)
    drain(state)
    stray = 104 + MAX_DROPOUT + 1
    state.push(pkt(stray), 0.1)  # one stray packet: held on probation
    state.push(pkt(105), 0.1)  # the stream goes on: the stray one is dropped
    assert drain(state) == [105]
    assert state.stats.probation_dropped == 1 and state.stats.seq_resets == 0
    state.push(pkt(20000), 0.2)  # device restarted its counter
    state.push(pkt(20001), 0.2)
    assert state.pop() == pkt(20000)
    assert state.last_discontinuity
    assert drain(state) == [20001]
    assert state.stats.seq_resets == 1


def test_flush_releases_everything_held() -> None:
    state = RtpReceiverState(SSRC)
    state.push(pkt(1), 0.0)
    state.push(pkt(4), 0.0)
    state.push(pkt(3), 0.0)
    state.flush()
    assert drain(state) == [1, 3, 4]
    assert state.stats.lost == 1


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"max_wait": -0.1}])
def test_receiver_rejects_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RtpReceiverState(**kwargs)  # type: ignore[arg-type]  # mixed int/float kwargs


@settings(max_examples=200)
@given(
    start=st.integers(0, 0xFFFF),
    count=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    spread=st.integers(0, 20),
)
def test_bounded_reordering_is_fully_repaired(
    start: int, count: int, seed: int, spread: int
) -> None:
    """Packets displaced by less than the window come out complete and in order (the first
    packet defines the start: nothing earlier can be waited for)."""
    rng = random.Random(seed)
    order = [0, *sorted(range(1, count), key=lambda i: i + rng.uniform(0, spread))]
    state = RtpReceiverState(SSRC, window=64)
    out: list[int] = []
    for k, i in enumerate(order):
        state.push(pkt(start + i, payload=i.to_bytes(4, "big")), now=k * 0.001)
        out.extend(int.from_bytes(p.payload, "big") for p in iter(state.pop, None))
    state.flush()
    out.extend(int.from_bytes(p.payload, "big") for p in iter(state.pop, None))
    assert out == list(range(count))
    assert state.stats.lost == 0
    assert state.stats.received == count


@settings(max_examples=200)
@given(
    start=st.integers(0, 0xFFFF),
    drops=st.sets(st.integers(1, 198), max_size=40),  # a tail loss is unknowable
    dups=st.sets(st.integers(0, 199), max_size=10),
)
def test_losses_and_duplicates_are_accounted(start: int, drops: set[int], dups: set[int]) -> None:
    state = RtpReceiverState(SSRC, window=16, max_wait=0.05)
    now = 0.0
    out: list[int] = []
    for i in range(200):
        if i in drops:
            continue
        now += 0.01
        state.handle_timer(now)
        state.push(pkt(start + i, payload=i.to_bytes(4, "big")), now)
        if i in dups:
            state.push(pkt(start + i, payload=i.to_bytes(4, "big")), now)
        out.extend(int.from_bytes(p.payload, "big") for p in iter(state.pop, None))
    state.flush()
    out.extend(int.from_bytes(p.payload, "big") for p in iter(state.pop, None))
    kept = [i for i in range(200) if i not in drops]
    assert out == kept
    assert state.stats.lost == len(drops)
    assert state.stats.duplicate == len(dups - drops)
    assert state.stats.received == len(kept)


# ---------------------------------------------------------------- packetizer


def test_packetizer_splits_marks_and_numbers() -> None:
    packetizer = RtpPacketizer(SSRC, sequence_number=65534)
    frame = bytes(range(256)) * 12  # 3072 bytes
    packets = packetizer.packetize(frame, timestamp=900000)
    assert [len(p.payload) for p in packets] == [1400, 1400, 272]
    assert [p.marker for p in packets] == [False, False, True]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0]
    assert {(p.timestamp, p.ssrc, p.payload_type) for p in packets} == {(900000, SSRC, 96)}
    assert b"".join(p.payload for p in packets) == frame
    assert packetizer.sequence_number == 1
    assert packetizer.packetize(b"", 0) == []
    assert packetizer.packetize(b"x", 1 << 32)[0].timestamp == 0


def test_packetizer_random_start_is_injectable() -> None:
    a = RtpPacketizer(SSRC, rng=random.Random(7))
    b = RtpPacketizer(SSRC, rng=random.Random(7))
    assert a.sequence_number == b.sequence_number
    assert 0 <= a.sequence_number <= 0xFFFF


@pytest.mark.parametrize(
    "kwargs",
    [{"max_payload": 0}, {"payload_type": 200}, {"sequence_number": 70000}, {"ssrc": -1}],
)
def test_packetizer_rejects_bad_config(kwargs: dict[str, int]) -> None:
    args: dict[str, int] = {"ssrc": SSRC, **kwargs}
    with pytest.raises(ValueError):
        RtpPacketizer(**args)  # type: ignore[arg-type]  # built as a dict on purpose


@given(data=st.binary(min_size=1, max_size=5000), size=st.integers(1, 1500))
def test_packetizer_then_receiver_restores_the_unit(data: bytes, size: int) -> None:
    packetizer = RtpPacketizer(SSRC, max_payload=size, sequence_number=65500)
    state = RtpReceiverState(SSRC)
    sent = packetizer.packetize(data, 3600)
    # Swap neighbours after the first packet: every packet but the first arrives out of order.
    order = list(range(len(sent)))
    for j in range(1, len(order) - 1, 2):
        order[j], order[j + 1] = order[j + 1], order[j]
    for i in order:
        state.push(RtpPacket.parse(bytes(sent[i])), 0.0)
    state.flush()
    packets = list(iter(state.pop, None))
    assert b"".join(p.payload for p in packets) == data
    assert [p.marker for p in packets][-1]


# ---------------------------------------------------------------- RFC 4571


def stream_of(count: int, *, ssrc: int = SSRC, size: int = 1400) -> list[bytes]:
    return [
        bytes(RtpPacket(96, i, 3600 * (i // 3), ssrc, bytes([i & 0xFF]) * size, i % 3 == 2))
        for i in range(count)
    ]


def test_frame_rfc4571_prefixes_length() -> None:
    assert frame_rfc4571(b"\x80" * 1412)[:2] == b"\x05\x84"  # PROTOCOL §4.4
    with pytest.raises(ValueError):
        frame_rfc4571(b"\x00" * 70000)


def test_decoder_reads_back_to_back_frames() -> None:
    packets = stream_of(5)
    decoder = Rfc4571Decoder()
    assert decoder.feed(b"".join(frame_rfc4571(p) for p in packets)) == packets
    assert decoder.ssrc == SSRC
    assert decoder.stats.frames == 5


@settings(max_examples=100)
@given(st.data())
def test_decoder_random_splits(data: st.DataObject) -> None:
    packets = stream_of(12, size=300)
    wire = b"".join(frame_rfc4571(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))
    decoder = Rfc4571Decoder(SSRC)
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        out.extend(decoder.feed(wire[prev:cut]))
        prev = cut
    assert out == packets
    assert decoder.stats.resyncs == 0


def test_decoder_resyncs_on_ssrc_after_broken_length() -> None:
    # ZLM#571: the device overran its buffer, a length lands mid-packet.
    packets = stream_of(6)
    framed = [frame_rfc4571(p) for p in packets]
    broken = framed[1][:700]  # packet 1 cut short, packet 2 follows directly
    wire = framed[0] + broken + b"".join(framed[2:])
    decoder = Rfc4571Decoder(SSRC)
    # The frame after the cut one is found inside it: only the cut packet is lost.
    assert decoder.feed(wire) == [packets[0], *packets[2:]]
    assert decoder.stats.truncated == 1
    assert decoder.stats.resyncs == 1
    assert decoder.stats.discarded_bytes == len(broken)


def test_decoder_resyncs_when_the_cut_is_seen_late() -> None:
    # Same damage, but the bytes after the cut frame arrive in a later read: the bogus frame
    # is already out, the next length is garbage, and the SSRC search finds the stream again.
    packets = stream_of(6)
    framed = [frame_rfc4571(p) for p in packets]
    wire = framed[0] + framed[1][:700] + b"".join(framed[2:])
    decoder = Rfc4571Decoder(SSRC)
    end_of_bogus = len(framed[0]) + len(framed[1])
    out = decoder.feed(wire[:end_of_bogus]) + decoder.feed(wire[end_of_bogus:])
    assert out[0] == packets[0]
    assert out[-3:] == packets[3:]
    assert decoder.stats.bad_length + decoder.stats.bad_version == 1
    assert decoder.stats.resyncs == 1


def test_decoder_rejects_oversize_length_and_non_rtp() -> None:
    packets = stream_of(3, size=200)
    junk = b"\xff\xff" + b"\x00" * 50  # length 65535 > 16 KiB
    non_rtp = frame_rfc4571(b"\x00" * 40)  # version 0
    wire = junk + frame_rfc4571(packets[0]) + non_rtp + b"".join(map(frame_rfc4571, packets[1:]))
    decoder = Rfc4571Decoder(SSRC)
    assert decoder.feed(wire) == packets
    assert decoder.stats.bad_length >= 1
    assert decoder.stats.bad_version >= 1
    assert decoder.stats.resyncs == 2


def test_decoder_resyncs_on_pack_header_before_ssrc_is_known() -> None:
    ps = b"\x00\x00\x01\xba" + b"\x44" * 200
    packet = bytes(RtpPacket(96, 1, 0, SSRC, ps))
    decoder = Rfc4571Decoder()
    assert decoder.feed(b"\x13\x37garbage!" + frame_rfc4571(packet)) == [packet]
    assert decoder.stats.resyncs == 1
    assert decoder.ssrc == SSRC


@given(st.binary(max_size=3000), st.integers(1, 500))
def test_decoder_survives_garbage_with_bounded_buffer(junk: bytes, step: int) -> None:
    decoder = Rfc4571Decoder(SSRC, max_frame=2048)
    for pos in range(0, len(junk), step):
        for frame in decoder.feed(junk[pos : pos + step]):
            assert 12 <= len(frame) <= 2048
        assert len(decoder._buf) <= 2048 + 2  # the cap is the point here
    # A bogus length from the junk may swallow up to max_frame bytes; the stream after that
    # is found again.
    tail = stream_of(40, size=100)
    out = decoder.feed(b"".join(map(frame_rfc4571, tail)))
    assert out[-10:] == tail[-10:]


@given(
    data=st.binary(min_size=0, max_size=5000),
    size=st.integers(1, 1500),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 1 << 34),
)
def test_packetize_wire_is_packetize_serialized(data: bytes, size: int, seq: int, ts: int) -> None:
    objects = RtpPacketizer(SSRC, max_payload=size, sequence_number=seq)
    wire = RtpPacketizer(SSRC, max_payload=size, sequence_number=seq)
    framed = RtpPacketizer(SSRC, max_payload=size, sequence_number=seq)
    packets = objects.packetize(data, ts)
    assert wire.packetize_wire(data, ts) == [p.serialize() for p in packets]
    assert framed.packetize_wire(data, ts, rfc4571=True) == [
        frame_rfc4571(p.serialize()) for p in packets
    ]
    assert wire.sequence_number == framed.sequence_number == objects.sequence_number

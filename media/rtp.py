"""Sans-I/O RTP (RFC 3550) for GB/T 28181 media: packets, receive-side reordering, output
packetization and RFC 4571 framing over TCP.

Rules:
1. Nothing here touches a socket, the loop or a clock. Time is the ``now`` argument (seconds,
   monotonic, the shell's ``loop.time()``); deadlines come back from ``next_deadline()``.
2. Every buffer fed from the network has a cap, and each overflow is counted, never raised.

Theory of operation (receive side): the shell parses each datagram with ``RtpPacket.parse``
(a ``RtpParseError`` is counted and dropped), then ``RtpReceiverState.push(packet, now)``.
The state extends the 16-bit sequence number across wrap-arounds (RFC 3550 Appendix A.1),
holds out-of-order packets in a window of ``window`` packets for at most ``max_wait`` seconds
and releases them in order through ``pop()``. A gap that outlives the window or the deadline is
declared lost and skipped; the next popped packet then has ``last_discontinuity`` set, which
the shell passes on as ``PsDemuxer.notify_loss()`` so the partial frame is dropped
(PROTOCOL §5.1). On TCP, ``Rfc4571Decoder`` turns the byte stream into packets first and
resynchronises on the known SSRC when a device corrupts its own framing (PROTOCOL §5.4).
"""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "Rfc4571Decoder",
    "Rfc4571Stats",
    "RtpPacket",
    "RtpPacketizer",
    "RtpParseError",
    "RtpReceiverState",
    "RtpReceiverStats",
    "frame_rfc4571",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
DEFAULT_MAX_PAYLOAD = 1400
"""Payload bytes per packet when sending (ZLMediaKit ``videoMtuSize``, PROTOCOL §5.1)."""
MAX_DROPOUT = 3000
"""A forward sequence jump beyond this many packets is a restart, not a loss (RFC 3550 A.1)."""
MAX_MISORDER = 100
"""A packet older than this many sequence numbers is a restart, not a late packet (RFC 3550 A.1)."""
MAX_READY = 1024
"""Released packets waiting for ``pop()``; beyond that the oldest is dropped and counted."""
_LATE_MEMORY = 1024
_SEQ_MOD = 1 << 16
_HEADER = struct.Struct(">BBHII")
_LENGTH = struct.Struct(">H")


class RtpParseError(ValueError):
    """A datagram that is not a valid RTP packet; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. The header extension and padding are consumed by ``parse``, not kept."""

    payload_type: int
    """7-bit payload type (96 for PS in GB/T 28181)."""
    sequence_number: int
    """16-bit sequence number."""
    timestamp: int
    """32-bit media timestamp, 90 kHz ticks for video."""
    ssrc: int
    """32-bit synchronisation source."""
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 0x7F:
            raise ValueError(f"RTP payload type {self.payload_type} is not in 0..127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"RTP sequence number {self.sequence_number} is not 16-bit")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise ValueError(f"RTP timestamp {self.timestamp} is not 32-bit")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"RTP SSRC {self.ssrc} is not 32-bit")
        if self.csrc and (len(self.csrc) > 15 or not all(0 <= c <= 0xFFFFFFFF for c in self.csrc)):
            raise ValueError("RTP CSRC list must hold at most 15 32-bit values")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one datagram (or RFC 4571 frame body); raise ``RtpParseError`` if invalid."""
        n = len(data)
        if n < RTP_HEADER_SIZE:
            raise RtpParseError(f"RTP packet is truncated: {n} bytes, the header needs 12")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version is {b0 >> 6}, expected 2")
        end = n
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0:
                raise RtpParseError("RTP padding bit is set but the padding length is 0")
            end -= pad
        pos = RTP_HEADER_SIZE
        cc = b0 & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            if pos + 4 * cc > end:
                raise RtpParseError(f"RTP CSRC list of {cc} entries is truncated ({n} bytes)")
            csrc = struct.unpack_from(f">{cc}I", data, pos)
            pos += 4 * cc
        if b0 & 0x10:
            if pos + 4 > end:
                raise RtpParseError("RTP header extension header is truncated")
            words = _LENGTH.unpack_from(data, pos + 2)[0]
            pos += 4 + 4 * words
            if pos > end:
                raise RtpParseError(f"RTP header extension of {words} words is truncated")
        if pos > end:
            raise RtpParseError(f"RTP padding of {n - end} bytes overlaps the header")
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[pos:end]), bool(b1 & 0x80), csrc)

    def serialize(self) -> bytes:
        """Return the wire bytes: header, CSRC list, payload (no extension, no padding)."""
        head = _HEADER.pack(
            0x80 | len(self.csrc),
            self.payload_type | (0x80 if self.marker else 0),
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        if self.csrc:
            head += struct.pack(f">{len(self.csrc)}I", *self.csrc)
        return head + self.payload

    def __bytes__(self) -> bytes:
        return self.serialize()


# ---------------------------------------------------------------- receive side


@dataclass(slots=True)
class RtpReceiverStats:
    """Counters of one ``RtpReceiverState``; all are packet counts."""

    received: int = 0
    """Packets accepted into the window (excludes duplicates, late and dropped ones)."""
    lost: int = 0
    """Sequence numbers skipped because the window overflowed or the deadline passed."""
    reordered: int = 0
    """Packets that arrived after a higher sequence number but in time to be released."""
    duplicate: int = 0
    late: int = 0
    """Packets that arrived after their sequence number had been declared lost."""
    ssrc_mismatch: int = 0
    """Strict: packets dropped for another SSRC. Tolerant: SSRC switches accepted."""
    seq_resets: int = 0
    """Sequence restarts (a jump beyond MAX_DROPOUT/MAX_MISORDER confirmed by a second packet)."""
    probation_dropped: int = 0
    """Packets far off the sequence that the next packet did not confirm as a restart."""
    overflow: int = 0
    """Released packets dropped because nobody called ``pop()``."""


class RtpReceiverState:
    """Sans-I/O receive state of one RTP stream: SSRC check, extended sequence, reordering.

    ``window`` packets and ``max_wait`` seconds bound how long a gap is waited for.
    """

    def __init__(
        self,
        expected_ssrc: int | None = None,
        *,
        ssrc_tolerant: bool = False,
        window: int = 64,
        max_wait: float = 0.1,
    ) -> None:
        if window < 1:
            raise ValueError("reorder window must hold at least 1 packet")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0 seconds")
        self.ssrc: int | None = expected_ssrc
        """The SSRC accepted now (latched from the first packet when none was expected)."""
        self.ssrc_tolerant = ssrc_tolerant
        self.window = window
        self.max_wait = max_wait
        self.stats = RtpReceiverStats()
        self.last_discontinuity = False
        """True when the packet last returned by ``pop()`` follows a gap, restart or SSRC
        switch: the consumer must resynchronise (``PsDemuxer.notify_loss()``)."""
        self._max_ext = -1  # highest extended sequence number accepted; -1 before the first
        self._next = 0  # extended sequence number to release next
        self._pending: dict[int, tuple[RtpPacket, float]] = {}
        self._ready: deque[tuple[RtpPacket, bool]] = deque()
        self._gap_pending = False  # a discontinuity to attach to the next released packet
        self._first = 0  # extended sequence number of the first packet since the last (re)start
        self._probation: tuple[RtpPacket, float] | None = None  # a jump awaiting confirmation
        self._skipped: set[int] = set()
        self._skipped_order: deque[int] = deque()

    @property
    def highest_sequence(self) -> int | None:
        """Highest sequence number accepted, extended by 65536 per wrap, or None before any."""
        return self._max_ext - _SEQ_MOD if self._max_ext >= 0 else None

    def push(self, packet: RtpPacket, now: float) -> None:
        """Accept a parsed packet that arrived at ``now`` (seconds)."""
        ssrc = packet.ssrc
        if self.ssrc is None:
            self.ssrc = ssrc
        elif ssrc != self.ssrc:
            self.stats.ssrc_mismatch += 1
            if not self.ssrc_tolerant:
                return
            # the stream is bound by port or connection; follow the new source.
            self.ssrc = ssrc
            self._restart()
        seq = packet.sequence_number
        if self._max_ext < 0:
            self._rebase(seq)
        delta = (seq - self._max_ext) & 0xFFFF
        if delta >= 0x8000:
            delta -= _SEQ_MOD
        if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
            probation = self._probation
            if probation is None or (probation[0].sequence_number + 1) & 0xFFFF != seq:
                # RFC 3550 A.1: a jump is a restart only when the next packet follows it.
                if probation is not None:
                    self.stats.probation_dropped += 1
                self._probation = (packet, now)
                return
            self.stats.seq_resets += 1
            self._restart()
            self._rebase(probation[0].sequence_number)
            self._accept(probation[0], probation[1], 1)
            delta = 1
        elif self._probation is not None:
            self.stats.probation_dropped += 1
            self._probation = None
        self._accept(packet, now, delta)

    def _accept(self, packet: RtpPacket, now: float, delta: int) -> None:
        ext = self._max_ext + delta
        if ext < self._next:
            if ext in self._skipped or ext < self._first:
                self.stats.late += 1
            else:
                self.stats.duplicate += 1
            return
        if ext in self._pending:
            self.stats.duplicate += 1
            return
        self.stats.received += 1
        if delta < 0:
            self.stats.reordered += 1
        else:
            self._max_ext = ext
        if ext == self._next and not self._pending:
            self._next += 1
            self._emit(packet)
            return
        self._pending[ext] = (packet, now)
        self._release()
        while self._pending and (
            len(self._pending) > self.window or self._max_ext - self._next >= self.window
        ):
            self._skip_gap()

    def pop(self) -> RtpPacket | None:
        """Next in-order packet, or None; sets ``last_discontinuity`` for it."""
        if not self._ready:
            return None
        packet, gap = self._ready.popleft()
        self.last_discontinuity = gap
        return packet

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must run (seconds, same clock as ``now``), or None."""
        if not self._pending:
            return None
        return min(t for _, t in self._pending.values()) + self.max_wait

    def handle_timer(self, now: float) -> None:
        """Give up on gaps whose oldest held packet has waited ``max_wait`` seconds."""
        while self._pending:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                break
            self._skip_gap()

    def flush(self) -> None:
        """Release everything held, skipping gaps (end of stream)."""
        while self._pending:
            self._skip_gap()

    # -- internals

    def _rebase(self, seq: int) -> None:
        self._max_ext = _SEQ_MOD + seq - 1  # one cycle up so that early reordering stays >= 0
        self._next = self._first = self._max_ext + 1

    def _restart(self) -> None:
        self.flush()
        if self._max_ext >= 0:
            self._gap_pending = True
        self._max_ext = -1
        self._probation = None
        self._skipped.clear()
        self._skipped_order.clear()

    def _emit(self, packet: RtpPacket) -> None:
        ready = self._ready
        if len(ready) >= MAX_READY:
            ready.popleft()
            self.stats.overflow += 1
            ready[0] = (ready[0][0], True)  # the consumer must resync after the dropped one
        ready.append((packet, self._gap_pending))
        self._gap_pending = False

    def _release(self) -> None:
        pending = self._pending
        while self._next in pending:
            packet, _ = pending.pop(self._next)
            self._next += 1
            self._emit(packet)

    def _skip_gap(self) -> None:
        first = min(self._pending)
        for ext in range(max(self._next, first - _LATE_MEMORY), first):
            self._remember_skipped(ext)
        self.stats.lost += first - self._next
        self._next = first
        self._gap_pending = True
        self._release()

    def _remember_skipped(self, ext: int) -> None:
        self._skipped.add(ext)
        self._skipped_order.append(ext)
        if len(self._skipped_order) > _LATE_MEMORY:
            self._skipped.discard(self._skipped_order.popleft())


# ---------------------------------------------------------------- send side


class RtpPacketizer:
    """Cut whole access units (one PS frame each) into RTP packets, marker on the last."""

    def __init__(
        self,
        ssrc: int,
        *,
        payload_type: int = 96,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        sequence_number: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} is not 32-bit")
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"payload type {payload_type} is not in 0..127")
        if not 1 <= max_payload <= 0xFFFF - RTP_HEADER_SIZE:
            raise ValueError(f"max_payload {max_payload} is not in 1..65523 bytes")
        if sequence_number is None:
            # RFC 3550 §5.1: the initial sequence number SHOULD be random.
            sequence_number = (rng or random.Random()).randrange(_SEQ_MOD)
        elif not 0 <= sequence_number <= 0xFFFF:
            raise ValueError(f"sequence number {sequence_number} is not 16-bit")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.max_payload = max_payload
        self.sequence_number = sequence_number
        """Sequence number of the next packet."""

    def packetize(self, data: bytes, timestamp: int) -> list[RtpPacket]:
        """Packets for one access unit; ``timestamp`` in 90 kHz ticks (taken modulo 2**32)."""
        if not data:
            return []
        ts = timestamp & 0xFFFFFFFF
        step = self.max_payload
        n = len(data)
        out: list[RtpPacket] = []
        seq = self.sequence_number
        for pos in range(0, n, step):
            chunk = data[pos : pos + step]
            out.append(RtpPacket(self.payload_type, seq, ts, self.ssrc, chunk, pos + step >= n))
            seq = (seq + 1) & 0xFFFF
        self.sequence_number = seq
        return out

    def packetize_wire(self, data: bytes, timestamp: int, *, rfc4571: bool = False) -> list[bytes]:
        """The same packets as ``packetize``, as wire bytes (each with its RFC 4571 length
        prefix when ``rfc4571``): the sending hot path, without a packet object per packet."""
        if not data:
            return []
        ts = timestamp & 0xFFFFFFFF
        step = self.max_payload
        n = len(data)
        last = n - step  # the chunk starting after this one is the marked last
        pack = _HEADER.pack
        pt = self.payload_type
        ssrc = self.ssrc
        seq = self.sequence_number
        view = memoryview(data)
        out: list[bytes] = []
        for pos in range(0, n, step):
            head = pack(0x80, pt | 0x80 if pos >= last else pt, seq, ts, ssrc)
            chunk = view[pos : pos + step]
            if rfc4571:
                out.append(_LENGTH.pack(RTP_HEADER_SIZE + len(chunk)) + head + chunk)
            else:
                out.append(head + chunk)
            seq = (seq + 1) & 0xFFFF
        self.sequence_number = seq
        return out


# ---------------------------------------------------------------- RFC 4571 framing


def frame_rfc4571(packet: bytes) -> bytes:
    """Prefix one RTP packet with its RFC 4571 2-byte big-endian length."""
    if len(packet) > 0xFFFF:
        raise ValueError(f"RFC 4571 frame of {len(packet)} bytes exceeds 65535")
    return _LENGTH.pack(len(packet)) + packet


@dataclass(slots=True)
class Rfc4571Stats:
    """Counters of one ``Rfc4571Decoder``."""

    frames: int = 0
    bad_length: int = 0
    """Length prefixes below 12 or above ``max_frame`` bytes."""
    bad_version: int = 0
    """Frames whose first byte is not RTP version 2 (or whose payload type changed)."""
    resyncs: int = 0
    """Times framing was found again after a fault."""
    truncated: int = 0
    """Frames dropped because the next frame began inside them."""
    discarded_bytes: int = 0


class Rfc4571Decoder:
    """Sans-I/O RFC 4571 deframer for RTP over TCP, with resynchronisation (PROTOCOL §5.4).

    A frame is accepted when its length is in 12..``max_frame`` bytes and its first byte says
    RTP version 2 (and its payload type equals the first frame's). Otherwise the decoder
    scans for an RTP header carrying the known SSRC at offset 8 (or, before any SSRC is
    known, a PS pack header ``00 00 01 BA`` right after a 12-byte header, ZLM#3399) and resumes
    framing two bytes before it. At most ``max_frame + 2`` bytes stay buffered.
    """

    def __init__(self, expected_ssrc: int | None = None, *, max_frame: int = 16384) -> None:
        if not RTP_HEADER_SIZE <= max_frame <= 0xFFFF:
            raise ValueError(f"max_frame {max_frame} is not in 12..65535 bytes")
        self.ssrc = expected_ssrc
        """SSRC used for resynchronisation: as offered until the first frame, then its own."""
        self.max_frame = max_frame
        self.stats = Rfc4571Stats()
        self._payload_type: int | None = None
        self._buf = bytearray()
        self._syncing = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append bytes from the TCP stream; return the complete RTP packets (no prefix)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while True:
            if self._syncing:
                found = self._find_sync(pos)
                if found < 0:
                    # Keep what could still begin a frame whose SSRC (or pack start code)
                    # has not fully arrived: up to 2 + 12 + 3 bytes.
                    keep = max(pos, n - 17)
                    self.stats.discarded_bytes += keep - pos
                    pos = keep
                    break
                self.stats.discarded_bytes += found - pos
                self.stats.resyncs += 1
                pos = found
                self._syncing = False
            if n - pos < 4:
                break
            if not self._plausible(pos):
                self._syncing = True
                pos += 1
                continue
            end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if end > n:
                break
            if n - end >= 4 and not self._plausible(end, count=False):
                # The next frame is not where this length says. If a frame starts inside
                # this one, this one was cut short (ZLM#571): drop it and resume there.
                inner = self._find_sync(pos + 1)
                if 0 <= inner < end:
                    self.stats.truncated += 1
                    self.stats.resyncs += 1
                    self.stats.discarded_bytes += inner - pos
                    pos = inner
                    continue
            frame = bytes(buf[pos + 2 : end])
            if self._payload_type is None:
                # The stream's own SSRC wins over the offered one.
                self.ssrc = int.from_bytes(frame[8:12], "big")
                self._payload_type = frame[1] & 0x7F
            self.stats.frames += 1
            out.append(frame)
            pos = end
        del buf[:pos]
        return out

    def _plausible(self, pos: int, *, count: bool = True) -> bool:
        """Whether the 4 bytes at ``pos`` can start a frame: length, version, payload type."""
        buf = self._buf
        length = (buf[pos] << 8) | buf[pos + 1]
        if not RTP_HEADER_SIZE <= length <= self.max_frame:
            if count:
                self.stats.bad_length += 1
            return False
        if buf[pos + 2] >> 6 != RTP_VERSION or (
            self._payload_type is not None and buf[pos + 3] & 0x7F != self._payload_type
        ):
            if count:
                self.stats.bad_version += 1
            return False
        return True

    def _find_sync(self, start: int) -> int:
        """Offset of a length prefix that plausibly starts a frame, or -1."""
        buf = self._buf
        if self.ssrc is not None:
            needle = self.ssrc.to_bytes(4, "big")
            back = 10  # 2 length bytes + 8 header bytes before the SSRC
        else:
            needle = b"\x00\x00\x01\xba"
            back = 14  # 2 length bytes + 12 header bytes before the pack header
        i = buf.find(needle, start + back)
        while i >= 0:
            cand = i - back
            if cand >= start and self._plausible(cand, count=False):
                return cand
            i = buf.find(needle, i + 1)
        return -1

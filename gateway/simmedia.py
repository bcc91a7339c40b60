"""Media side of a simulated GB/T 28181 device (``gbgw simulate``): answer the gateway's INVITE
offer, then stream an MPEG-PS file as RTP from the ACK until the BYE (PROTOCOL §4, §5.1).

Rules:
1. The file is cut into frames once (``PsFile``) by walking its PS structure, not by searching
   for ``00 00 01 BA`` (an audio payload may hold those bytes): one pack is one frame and one
   RTP timestamp, and consecutive packs with the same PTS are one frame. Its time is the PTS of
   the first PES in it, else the previous frame's plus 90000/fps ticks.
2. One owner: a ``MediaSession`` owns one task and at most one socket at a time; ``stop()``
   ends the task and returns only when the socket is closed.
3. Bounded: files up to ``MAX_FILE_BYTES``; at most ``max_write_buffer`` bytes queued in the
   transport (a TCP peer that does not read), beyond which the session stops with a reason.
4. Time is ``loop.time()``: frame i of pass k is due at ``t0 + (k * span + clock_i) / 90000``
   (``/ speed``), an absolute deadline, so pacing never drifts. After a stall of more than
   ``MAX_LAG`` seconds the schedule is re-based instead of sending a burst.

Theory of operation: ``answer()`` binds the socket the 200 OK advertises: a UDP socket to send
from; for an offer ``a=setup:passive`` (the gateway listens) a TCP socket that will connect to
the offer's ``c=``/``m=`` after ``start()``; for ``a=setup:active`` (the gateway connects) a
listening socket, open before the answer leaves (Q-9). ``start()`` (after the ACK) starts the
task: connect or accept, then send frames forever. Each pass over the file continues the RTP
timestamps, sequence numbers and, rewritten in the PS itself, SCR/PTS/DTS, so a receiver sees
one continuous stream. A peer closing TCP, a socket error, the write cap or ``stop()`` (BYE)
end it; ``close_reason`` says which and ``wait_closed()`` waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from gateway.sdp import SdpError, SessionDescription, build_answer, ssrc_int
from media.rtp import RtpPacketizer, frame_rfc4571

__all__ = [
    "CLOCK_RATE",
    "MAX_FILE_BYTES",
    "MAX_LAG",
    "MAX_WRITE_BUFFER",
    "MediaSession",
    "MediaStats",
    "PsFile",
    "PsFrame",
    "frame_schedule",
    "retime",
]

log = logging.getLogger("gbgw.simmedia")

CLOCK_RATE: Final = 90000
"""RTP and PS clock, ticks per second."""
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
"""Largest PS file loaded, bytes."""
MAX_WRITE_BUFFER: Final = 2 * 1024 * 1024
"""Bytes queued in a transport beyond which the peer is taken as not reading (rule 3)."""
MAX_LAG: Final = 1.0
"""Seconds behind schedule after which pacing re-bases instead of catching up (rule 4)."""
MAX_PTS_STEP: Final = 10 * CLOCK_RATE
"""A PTS jump larger than this many ticks between frames is a discontinuity, not a gap."""
_CLOSE_WAIT = 1.0  # seconds to wait for a transport's connection_lost at teardown
_PACK = b"\x00\x00\x01\xba"
_START = b"\x00\x00\x01"
_MASK33 = (1 << 33) - 1


# ---------------------------------------------------------------- the file (sans-I/O)


@dataclass(frozen=True, slots=True)
class PsFrame:
    """One RTP timestamp's worth of PS: whole packs, with where their clocks are."""

    data: bytes
    clock: int
    """Time in the file, 90 kHz ticks from its earliest frame (>= 0)."""
    scr_offsets: tuple[int, ...] = ()
    """Offsets in ``data`` of MPEG-2 pack headers' SCR fields (byte after ``00 00 01 BA``)."""
    ts_offsets: tuple[int, ...] = ()
    """Offsets in ``data`` of 5-byte PES PTS and DTS fields."""


@dataclass(frozen=True, slots=True)
class PsFile:
    """A PS file cut into frames (rule 1); ``span`` is one pass in 90 kHz ticks."""

    frames: tuple[PsFrame, ...]
    span: int

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, fps: float = 25.0) -> PsFile:
        """Read and cut a file of at most ``MAX_FILE_BYTES``; raise ValueError if not PS."""
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        return cls.from_bytes(data, fps=fps)

    @classmethod
    def from_bytes(cls, data: bytes, *, fps: float = 25.0) -> PsFile:
        """Cut PS bytes into frames; ``fps`` times frames without a PTS and the loop join."""
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"PS file exceeds {MAX_FILE_BYTES} bytes")
        if not 1.0 <= fps <= 1000.0:
            raise ValueError(f"fps {fps} is not in 1..1000")
        step = round(CLOCK_RATE / fps)
        packs = _walk(data)
        merged: list[_Pack] = []
        for pack in packs:  # rule 1: packs of one PTS are one frame
            last = merged[-1] if merged else None
            if last and pack.pts is not None and pack.pts == last.pts and pack.start == last.end:
                last.end = pack.end
                last.scrs += pack.scrs
                last.tss += pack.tss
            else:
                merged.append(pack)
        clocks: list[int] = []
        last_pts: int | None = None
        last_pts_clock = 0
        for pack in merged:
            clock = clocks[-1] + step if clocks else 0
            if pack.pts is not None and last_pts is not None:
                delta = (pack.pts - last_pts) & _MASK33
                if delta >= 1 << 32:
                    delta -= 1 << 33
                if abs(delta) <= MAX_PTS_STEP:
                    clock = last_pts_clock + delta
            if pack.pts is not None:
                last_pts, last_pts_clock = pack.pts, clock
            clocks.append(clock)
        low = min(clocks)
        frames = tuple(
            PsFrame(
                data[p.start : p.end],
                clock - low,
                tuple(o - p.start for o in p.scrs),
                tuple(o - p.start for o in p.tss),
            )
            for p, clock in zip(merged, clocks, strict=True)
        )
        return cls(frames, max(f.clock for f in frames) + step)


@dataclass(slots=True)
class _Pack:
    start: int
    end: int = 0
    pts: int | None = None
    scrs: list[int] = field(default_factory=list)
    tss: list[int] = field(default_factory=list)


def _walk(data: bytes) -> list[_Pack]:
    """Packs of ``data`` by structure lengths; garbage stays in its pack, end codes go."""
    n = len(data)
    pos = data.find(_PACK)
    if pos < 0:
        raise ValueError("no pack header (00 00 01 BA): not an MPEG-PS file")
    packs: list[_Pack] = []
    cur: _Pack | None = None
    while pos + 4 <= n:
        sid = data[pos + 3]
        if data[pos : pos + 3] != _START or sid <= 0xB9:
            if sid == 0xB9 and data[pos : pos + 3] == _START and cur is not None:
                cur.end = pos  # the program end code: not sent in the middle of a loop
                packs.append(cur)
                cur = None
            nxt = data.find(_PACK, pos + 1)
            if nxt < 0:
                pos = n
                break
            pos = nxt
            continue
        if sid == 0xBA:
            if cur is not None:
                cur.end = pos
                packs.append(cur)
            cur = _Pack(pos)
            if pos + 14 <= n and data[pos + 4] & 0xC0 == 0x40:
                cur.scrs.append(pos + 4)
                pos += 14 + (data[pos + 13] & 7)
            else:
                pos += 12  # MPEG-1 pack header: sent as is, its SCR not rewritten
            continue
        if cur is None or pos + 6 > n:
            break
        length = data[pos + 4] << 8 | data[pos + 5]
        end = pos + 6 + length
        if length == 0:  # PES of unbounded length (illegal in PS, sent anyway): to next pack
            nxt = data.find(_PACK, pos + 6)
            end = nxt if nxt >= 0 else n
        if (0xC0 <= sid <= 0xEF or sid == 0xBD) and pos + 14 <= n and data[pos + 6] & 0xC0 == 0x80:
            flags, header_len = data[pos + 7] >> 6, data[pos + 8]
            if flags & 2 and header_len >= 5:
                cur.tss.append(pos + 9)
                if cur.pts is None:
                    cur.pts = _read_ts(data, pos + 9)
                if flags == 3 and header_len >= 10 and pos + 19 <= n:
                    cur.tss.append(pos + 14)
        pos = end
    if cur is not None:
        cur.end = n
        packs.append(cur)
    return [p for p in packs if p.end > p.start]


def _read_ts(b: bytes | bytearray, p: int) -> int:
    return (
        ((b[p] >> 1) & 7) << 30
        | b[p + 1] << 22
        | (b[p + 2] >> 1) << 15
        | b[p + 3] << 7
        | b[p + 4] >> 1
    )


def _write_ts(b: bytearray, p: int, t: int) -> None:
    """ISO/IEC 13818-1 §2.4.3.7: 33 bits in 3/15/15 with marker bits; the prefix nibble kept."""
    b[p : p + 5] = bytes(
        (
            b[p] & 0xF0 | (t >> 29) & 0x0E | 1,
            (t >> 22) & 0xFF,
            (t >> 14) & 0xFE | 1,
            (t >> 7) & 0xFF,
            (t << 1) & 0xFE | 1,
        )
    )


def _read_scr(b: bytes | bytearray, p: int) -> int:
    return (
        ((b[p] >> 3) & 7) << 30
        | (b[p] & 3) << 28
        | b[p + 1] << 20
        | ((b[p + 2] >> 3) & 0x1F) << 15
        | (b[p + 2] & 3) << 13
        | b[p + 3] << 5
        | b[p + 4] >> 3
    )


def _write_scr(b: bytearray, p: int, s: int) -> None:
    """ISO/IEC 13818-1 §2.5.3.3 SCR base; the extension bits in bytes 4-5 are kept."""
    b[p : p + 5] = bytes(
        (
            0x44 | (s >> 27) & 0x38 | (s >> 28) & 0x03,
            (s >> 20) & 0xFF,
            (s >> 12) & 0xF8 | 0x04 | (s >> 13) & 0x03,
            (s >> 5) & 0xFF,
            (s << 3) & 0xF8 | 0x04 | b[p + 4] & 0x03,
        )
    )


def retime(frame: PsFrame, offset: int) -> bytes:
    """``frame.data`` with ``offset`` 90 kHz ticks added to every SCR, PTS and DTS (mod 2**33)."""
    if offset == 0:
        return frame.data
    b = bytearray(frame.data)
    for p in frame.scr_offsets:
        _write_scr(b, p, (_read_scr(b, p) + offset) & _MASK33)
    for p in frame.ts_offsets:
        _write_ts(b, p, (_read_ts(b, p) + offset) & _MASK33)
    return bytes(b)


def frame_schedule(ps: PsFile) -> Iterator[tuple[int, int, bytes]]:
    """Endless ``(pass, clock, data)``: ``clock`` in 90 kHz ticks since the first frame of the
    first pass; pass k adds ``k * span`` to clocks and to the PS's own timestamps."""
    k = 0
    while True:
        offset = k * ps.span
        for frame in ps.frames:
            yield k, offset + frame.clock, retime(frame, offset)
        k += 1


# ---------------------------------------------------------------- the session (asyncio shell)


@dataclass(slots=True)
class MediaStats:
    """Counters of one ``MediaSession``."""

    packets: int = 0
    bytes: int = 0
    """RTP bytes (header + payload) handed to the socket, without RFC 4571 length prefixes."""
    frames: int = 0
    loops: int = 0
    """Completed passes over the file."""


class _TcpLink(asyncio.Protocol):
    """TCP callbacks of a session: input is discarded, the connection's end ends streaming."""

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        pass  # RTCP or junk from the gateway: a camera ignores it too

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._halt(f"connection lost: {exc}" if exc else "peer closed the connection")
        if not self.lost.done():
            self.lost.set_result(None)


class MediaSession:
    """The RTP sender of one simulated INVITE dialog: ``answer()``, ``start()`` after the ACK,
    ``stop()`` on BYE. ``speed`` 1.0 is real time, 0 sends as fast as the loop allows."""

    def __init__(
        self,
        offer: SessionDescription,
        local_ip: str,
        source: str | os.PathLike[str] | PsFile,
        *,
        origin_user: str = "-",
        ssrc: str | None = None,
        speed: float = 1.0,
        max_write_buffer: int = MAX_WRITE_BUFFER,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if offer.port == 0:
            raise SdpError("the offer's m= port is 0: no media wanted")
        if offer.is_tcp and offer.setup == "holdconn":
            raise SdpError("the offer's a=setup:holdconn asks for no connection")
        if speed < 0 or max_write_buffer < 1 or connect_timeout <= 0:
            raise ValueError("speed >= 0, max_write_buffer >= 1 byte, connect_timeout > 0 s")
        self.offer = offer
        self.local_ip = local_ip
        self.ps = source if isinstance(source, PsFile) else PsFile.load(Path(source))
        self.origin_user = origin_user
        rng = rng or random.Random()
        y = ssrc or offer.ssrc or f"0{rng.randrange(10**9):09d}"
        self.ssrc_text = y
        """The ``y=`` answered: the offer's unless overridden (Q-3) or absent (Q-13)."""
        self.ssrc = ssrc_int(y)
        self.speed = speed
        self.max_write_buffer = max_write_buffer
        self.connect_timeout = connect_timeout
        self.stats = MediaStats()
        self.send_errors = 0
        """UDP packets not sent: socket buffer full or an ICMP error reported."""
        self.close_reason: str | None = None
        """Why streaming ended: ``stopped``, ``peer closed the connection``, ..., or None."""
        self.peer: tuple[str, int] = (offer.connection_address, offer.port)
        """Where RTP goes: the offer's ``c=``/``m=``, or the gateway that connected to us."""
        self._packetizer = RtpPacketizer(self.ssrc, payload_type=96, max_payload=1400, rng=rng)
        self._ts_base = rng.randrange(1 << 32)
        self._answer: SessionDescription | None = None
        self.mode = "udp"
        """``udp``, ``tcp-active`` (we connect) or ``tcp-passive`` (we listen); set by answer."""
        self._sock: socket.socket | None = None
        self._transport: asyncio.Transport | None = None
        self._link: _TcpLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._halted = asyncio.Event()
        self._closed = asyncio.Event()
        self._stopping = False
        self._tearing_down = False

    @property
    def closed(self) -> bool:
        """Streaming has ended and every socket is closed."""
        return self._closed.is_set()

    def answer(self) -> SessionDescription:
        """The 200 OK SDP; binds (and for TCP passive, listens on) the advertised port."""
        if self._answer is not None:
            return self._answer
        if self._stopping:
            raise RuntimeError("media session already stopped")
        draft = build_answer(self.offer, self.origin_user, self.local_ip, 0, ssrc=self.ssrc_text)
        family = socket.AF_INET6 if ":" in self.local_ip else socket.AF_INET
        if not self.offer.is_tcp:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            self.mode = "tcp-active" if draft.setup == "active" else "tcp-passive"
        try:
            sock.setblocking(False)
            if self.mode == "tcp-passive":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.local_ip, 0))
            if self.mode == "tcp-passive":
                sock.listen(1)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._answer = replace(draft, port=sock.getsockname()[1])
        return self._answer

    async def start(self) -> None:
        """Start streaming (call after the ACK); returns at once, the task runs until stop."""
        if self._stopping or self.closed:
            raise RuntimeError("media session already stopped")
        if self._task is not None:
            return
        self.answer()
        self._task = asyncio.create_task(self._run(), name=f"simmedia-{self.ssrc_text}")

    async def stop(self) -> None:
        """End streaming (BYE) and close every socket; idempotent."""
        self._stopping = True
        task = self._task
        if task is None:
            self._close_socket()
            self.close_reason = self.close_reason or "stopped"
            self._closed.set()
            return
        if not task.done() and not self._tearing_down:
            task.cancel()
        await asyncio.wait([task])

    async def wait_closed(self) -> str:
        """Wait until streaming has ended (peer gone, error, cap, stop); return the reason."""
        await self._closed.wait()
        assert self.close_reason is not None
        return self.close_reason

    # -- internals

    def _halt(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self._halted.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._open(loop)
            log.info(
                "simmedia.start ssrc=%s transport=%s peer=%s:%s",
                self.ssrc_text,
                self.mode,
                *self.peer,
            )
            await self._stream(loop)
        except TimeoutError:
            self._halt(f"no {self.mode} connection within {self.connect_timeout} s")
        except OSError as exc:
            self._halt(f"socket error: {exc}")
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            self._halt("stopped")
        except Exception:  # the shell must end cleanly; a bug here is logged, not lost
            log.exception("simmedia.error ssrc=%s", self.ssrc_text)
            self._halt("internal error")
        finally:
            self._tearing_down = True
            await self._teardown()
            self._halt("stopped")
            self._closed.set()
            log.info(
                "simmedia.stop ssrc=%s reason=%r packets=%d frames=%d loops=%d",
                self.ssrc_text,
                self.close_reason,
                self.stats.packets,
                self.stats.frames,
                self.stats.loops,
            )

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._sock
        assert sock is not None
        if self.mode == "udp":
            return  # datagrams go out of the bound socket as they are
        if self.mode == "tcp-active":
            await loop.sock_connect(sock, self.peer)
            conn = sock
        else:
            conn, peer = await loop.sock_accept(sock)
            self.peer = (str(peer[0]), int(peer[1]))
            sock.close()  # a=connection:new: one connection per session
            self._sock = conn
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport, self._link = await loop.connect_accepted_socket(
            lambda: _TcpLink(self), sock=conn
        )
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check
        self._transport = transport
        self._sock = None  # the transport owns it now

    async def _stream(self, loop: asyncio.AbstractEventLoop) -> None:
        t0 = loop.time()
        for k, clock, data in frame_schedule(self.ps):
            self.stats.loops = k
            if self.speed > 0:
                due = t0 + clock / CLOCK_RATE / self.speed
                lag = loop.time() - due
                if lag > MAX_LAG:
                    t0 += lag  # rule 4: stalled, re-base rather than burst
                elif lag < 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(due):
                            await self._halted.wait()
            else:
                await asyncio.sleep(0)  # unpaced: still let the loop run between frames
            if self._halted.is_set():
                return
            packets = self._packetizer.packetize(data, self._ts_base + clock)
            self._send([p.serialize() for p in packets])
            self.stats.frames += 1
            queued = self._transport.get_write_buffer_size() if self._transport else 0
            if queued > self.max_write_buffer:
                log.warning(
                    "simmedia.peer_not_reading ssrc=%s peer=%s:%s queued=%d",
                    self.ssrc_text,
                    *self.peer,
                    queued,
                )
                self._halt(f"peer not reading: {queued} bytes queued")
                return

    def _send(self, packets: list[bytes]) -> None:
        if self._transport is not None:
            self._transport.write(b"".join(frame_rfc4571(p) for p in packets))
            self.stats.packets += len(packets)
            self.stats.bytes += sum(len(p) for p in packets)
            return
        sock = self._sock
        assert sock is not None
        for p in packets:
            try:
                sock.sendto(p, self.peer)
            except OSError:  # buffer full or ICMP unreachable: lost, as a camera's would be
                self.send_errors += 1
                continue
            self.stats.packets += 1
            self.stats.bytes += len(p)

    async def _teardown(self) -> None:
        transport, link = self._transport, self._link
        if transport is not None and link is not None:
            transport.abort()  # unsent bytes are dropped: after a BYE nobody wants them
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await asyncio.shield(link.lost)
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

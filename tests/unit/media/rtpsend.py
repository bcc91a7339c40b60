"""A test camera: sends a sample PS file as GB/T 28181 RTP over UDP or TCP (RFC 4571).

The file is cut into packs by walking its structure (pack header, then packets by their
length fields); each pack is one RTP "frame" stamped with its first PES PTS, packetized with
``RtpPacketizer`` (marker on the last packet). Damage is opt-in and seeded, so every test says
exactly what the device did wrong: loss, reordering, a wrong SSRC, junk in the PS stream or
between RFC 4571 frames, a truncated file.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from media.rtp import RtpPacketizer, frame_rfc4571

DATA = Path(__file__).parents[2] / "data" / "media"
H264 = "h264_640x360_25fps_10s.ps"
H265 = "h265_640x360_25fps_10s.ps"
H264_G711A = "h264_640x360_25fps_10s_g711a.ps"
SSRC = 200001234  # y=0200001234
JUNK = b"\xde\xad\xbe\xef" * 8  # no 00 00 01 inside; as a length prefix, far too long


@cache
def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _pts(data: bytes, pos: int) -> int:
    b = data[pos : pos + 5]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def packs(data: bytes) -> Iterator[tuple[bytes, int | None]]:
    """(pack bytes, first PES PTS or None) per pack, walking the PS structure by lengths."""
    n = len(data)
    pos = data.find(b"\x00\x00\x01\xba")
    start, pts = pos, None
    while 0 <= pos <= n - 4:
        sid = data[pos + 3]
        if data[pos : pos + 3] != b"\x00\x00\x01":
            raise ValueError(f"sample is not well formed at byte {pos}")
        if sid == 0xBA:
            if pos + 14 > n:
                break
            if pos != start:
                yield data[start:pos], pts
            start, pts = pos, None
            pos += 14 + (data[pos + 13] & 7)
        elif sid == 0xB9:
            pos += 4
        else:
            if pts is None and 0xC0 <= sid <= 0xEF and data[pos + 7] & 0x80:
                pts = _pts(data, pos + 9)
            pos += 6 + (data[pos + 4] << 8 | data[pos + 5])
    if start < n:
        yield data[start:], pts


@dataclass
class Camera:
    """What to send and how to damage it; ``packets()`` gives the wire datagrams."""

    name: str = H264
    ssrc: int = SSRC
    seed: int = 1
    loss: float = 0.0
    """Fraction of RTP packets dropped (at random, seeded)."""
    reorder: int = 0
    """Shuffle packets within blocks of this many, from the second block on (a receiver
    cannot know that an earlier packet than the very first is still to come)."""
    ps_junk_every: int = 0
    """Insert ``JUNK`` into the PS stream after every Nth pack (0: never)."""
    truncate: float = 1.0
    """Send only this fraction of the file's bytes (cut mid-pack)."""
    max_payload: int = 1400

    def frames(self) -> list[tuple[bytes, int]]:
        """(PS bytes, 90 kHz RTP timestamp) per RTP frame, damage to the PS applied."""
        data = sample(self.name)
        if self.truncate < 1.0:
            data = data[: int(len(data) * self.truncate)]
        out: list[tuple[bytes, int]] = []
        ts = 0
        for i, (pack, pts) in enumerate(packs(data)):
            ts = pts if pts is not None else ts + 3600
            if self.ps_junk_every and i % self.ps_junk_every == self.ps_junk_every - 1:
                pack += JUNK
            out.append((pack, ts))
        return out

    def packets(self) -> list[bytes]:
        """Serialized RTP packets in sending order, after loss and reordering."""
        rng = random.Random(self.seed)
        packetizer = RtpPacketizer(self.ssrc, max_payload=self.max_payload, rng=rng)
        wire = [
            p.serialize()
            for frame, ts in self.frames()
            for p in packetizer.packetize(frame, ts + 1_000_000)
        ]
        if self.loss:
            wire = [p for p in wire if rng.random() >= self.loss]
        if self.reorder > 1:
            shuffled: list[bytes] = []
            for i in range(0, len(wire), self.reorder):
                block = wire[i : i + self.reorder]
                if i:
                    rng.shuffle(block)
                shuffled.extend(block)
            wire = shuffled
        return wire


def frame_groups(wire: list[bytes]) -> Iterator[list[bytes]]:
    """The packets cut after each marker (one RTP frame each, in order)."""
    group: list[bytes] = []
    for p in wire:
        group.append(p)
        if p[1] & 0x80:
            yield group
            group = []
    if group:
        yield group


async def send_udp(
    wire: list[bytes],
    port: int,
    *,
    host: str = "127.0.0.1",
    sock: socket.socket | None = None,
    pace: float = 0.0,
) -> int:
    """Send datagrams to (host, port); yield to the loop after each frame (``pace`` > 0: also
    wait that many seconds, like a camera's frame interval). Returns packets sent."""
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    try:
        for group in frame_groups(wire):
            for p in group:
                while True:
                    try:
                        sock.sendto(p, (host, port))  # uvloop has no sock_sendto
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0)  # send buffer full: let the loop run
                sent += 1
            await asyncio.sleep(pace)  # pacing, not synchronisation: let the receiver read
    finally:
        if own:
            sock.close()
    return sent


async def write_rfc4571(
    writer: asyncio.StreamWriter, wire: list[bytes], *, junk_every: int = 0
) -> None:
    """Write RFC 4571 frames, with ``JUNK`` between frames every ``junk_every`` packets."""
    for i, p in enumerate(wire):
        writer.write(frame_rfc4571(p))
        if junk_every and i % junk_every == junk_every - 1:
            writer.write(JUNK)
        if p[1] & 0x80:
            await writer.drain()
    await writer.drain()


async def send_tcp(
    wire: list[bytes],
    port: int,
    *,
    host: str = "127.0.0.1",
    local_host: str | None = None,
    junk_every: int = 0,
    close: bool = True,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a TCP passive receiver and send; returns the stream (closed if ``close``)."""
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    await write_rfc4571(writer, wire, junk_every=junk_every)
    if close:
        writer.close()
        await writer.wait_closed()
    return reader, writer


class Listener:
    """A device listening for a TCP active receiver; serves ``wire`` to the first connection."""

    def __init__(self, wire: list[bytes], *, junk_every: int = 0) -> None:
        self.wire = wire
        self.junk_every = junk_every
        self.server: asyncio.Server | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.port = 0

    async def start(self, sock: socket.socket | None = None) -> Listener:
        if sock is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        else:
            self.server = await asyncio.start_server(self._serve, sock=sock)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await write_rfc4571(writer, self.wire, junk_every=self.junk_every)
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            writer.close()
        if not self.done.done():
            self.done.set_result(None)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def mpeg_ts_wire(count: int = 20, ssrc: int = SSRC) -> list[bytes]:
    """RTP packets whose payload is MPEG-TS (7 x 188-byte packets), which gbgw rejects."""
    ts_packet = b"\x47\x40\x00\x10" + b"\xff" * 184
    packetizer = RtpPacketizer(ssrc, max_payload=7 * 188, sequence_number=1)
    return [
        p.serialize() for i in range(count) for p in packetizer.packetize(ts_packet * 7, i * 3600)
    ]


def rtp_header(seq: int, ts: int, ssrc: int = SSRC, marker: bool = False) -> bytes:
    """A bare 12-byte RTP header (PT 96)."""
    return struct.pack(">BBHII", 0x80, 96 | (0x80 if marker else 0), seq, ts, ssrc)

"""HTTP MPEG-TS muxer (ISO/IEC 13818-1 §2.4): access units in, 188-byte packets out.

Rules:
1. One program: PAT (PID 0) names the PMT (PID 0x1000), which maps the video PID 0x100
   (stream_type 0x1B H.264, 0x24 H.265) and the audio PID 0x101 (0x0F AAC in ADTS). The PCR
   is on the video PID (the audio PID when there is no video), in the first packet of every
   PES on it, equal to the PES's DTS: a live relay has no T-STD lead to model. A step back
   or a jump over ``MAX_PCR_STEP`` (camera restart) sets discontinuity_indicator.
2. Nothing is written before the first video keyframe. Each keyframe is preceded by PAT and
   PMT, and its first packet sets random_access_indicator, so the bytes from any keyframe's
   ``mux()`` on are a stream a joiner can start with. Without video, PAT and PMT precede the
   first audio unit and every ``AUDIO_TABLE_INTERVAL``-th one.
3. One unit is one PES; its last packet is filled with adaptation-field stuffing, so every
   ``mux()`` result is whole packets and the hub may cut between any two of them.
4. ITU-T H.222.0 §2.14.1 / §2.17.1: an AVC or HEVC access unit in TS starts with an access
   unit delimiter; one is put in front of a unit that has none. Video PES carry the unit's
   PTS (and DTS when it differs) unchanged, 33-bit.
5. G.711 is not carried: no TS stream_type or registration descriptor maps it to a codec
   FFmpeg reads (checked with ffprobe 5.1 and PyAV's libavformat 62: 0x90 as in GB's PS is
   "unknown", 0x06 private data "bin_data"). Its units are dropped and ``audio_codec`` is
   None; FLV and PS carry it.

``header()`` is PAT + PMT with continuity counters one behind the next ones: the hub takes
``header()`` just before a keyframe's ``mux()``, so a joiner sees no CC jump into that
keyframe's own PAT/PMT.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from media.codec_info import Codec
from media.ps import AccessUnit, crc32_mpeg2
from media.sinks._base import UnsupportedCodec

__all__ = ["AUDIO_PID", "AUDIO_TABLE_INTERVAL", "MAX_PCR_STEP", "PMT_PID", "VIDEO_PID", "TsMuxer"]

PMT_PID: Final = 0x1000
VIDEO_PID: Final = 0x100
AUDIO_PID: Final = 0x101
AUDIO_TABLE_INTERVAL: Final = 50
"""Audio units between PAT/PMT repeats when there is no video (no keyframes to mark)."""
MAX_PCR_STEP: Final = 10 * 90000
"""90 kHz ticks; a PCR further ahead (or any step back) is flagged as a discontinuity."""
_PACKET = 188
_PAYLOAD = 184
_MASK33 = (1 << 33) - 1
_VIDEO_TYPES = {Codec.H264: 0x1B, Codec.H265: 0x24}
_AUDIO_TYPES = {Codec.AAC: 0x0F}
_NOT_CARRIED = frozenset((Codec.PCMA, Codec.PCMU))  # rule 5: dropped, not an error
# Rule 4: H.264 AUD primary_pic_type 7 (any); H.265 AUD (type 35) pic_type 2 (any).
_AUD = {Codec.H264: b"\x00\x00\x00\x01\x09\xf0", Codec.H265: b"\x00\x00\x00\x01\x46\x01\x50"}
_STUFFING = b"\xff" * _PACKET
_BULK_PACKETS = 40  # full packets from which numpy beats the Python loop (measured: 7 KB)


def _timestamp(prefix: int, ticks: int) -> bytes:
    """5-byte PTS/DTS field (§2.4.3.7): ``prefix`` nibble, 33-bit value, marker bits."""
    t = ticks & _MASK33
    return bytes(
        (
            prefix << 4 | (t >> 29) & 0x0E | 1,
            (t >> 22) & 0xFF,
            (t >> 14) & 0xFE | 1,
            (t >> 7) & 0xFF,
            (t << 1) & 0xFE | 1,
        )
    )


def _pcr(ticks: int) -> bytes:
    """6-byte PCR (§2.4.3.5): 33-bit base in 90 kHz ticks, reserved bits, extension 0."""
    t = ticks & _MASK33
    return struct.pack(">IH", t >> 1, (t & 1) << 15 | 0x7E00)


def _section(table_id: int, ext_id: int, body: bytes) -> bytes:
    """A long-form PSI section (§2.4.4) with version 0, one section, and its CRC-32/MPEG-2."""
    length = 5 + len(body) + 4
    head = struct.pack(">BHHBBB", table_id, 0xB000 | length, ext_id, 0xC1, 0, 0)
    section = head + body
    return section + struct.pack(">I", crc32_mpeg2(section))


def _headers(pid: int, pusi: int, afc: int) -> tuple[bytes, ...]:
    """The 16 four-byte packet headers of one PID/flags combination, indexed by CC."""
    return tuple(struct.pack(">BHB", 0x47, pusi << 14 | pid, afc << 4 | cc) for cc in range(16))


class TsMuxer:
    """MPEG-TS packets for H.264/H.265 video and AAC audio; see the module rules."""

    content_type = "video/mp2t"

    def __init__(self, video_codec: Codec | None, audio_codec: Codec | None = None) -> None:
        if video_codec is not None and video_codec not in _VIDEO_TYPES:
            raise UnsupportedCodec(f"MPEG-TS muxer cannot carry video codec {video_codec}")
        if audio_codec is not None and audio_codec not in _AUDIO_TYPES:
            if audio_codec not in _NOT_CARRIED:
                raise UnsupportedCodec(f"MPEG-TS muxer cannot carry audio codec {audio_codec}")
            audio_codec = None  # rule 5
        if video_codec is None and audio_codec is None:
            raise UnsupportedCodec("an MPEG-TS muxer needs H.264/H.265 video or AAC audio")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        """The audio codec carried; None when G.711 was asked for (rule 5)."""
        self._pcr_pid = VIDEO_PID if video_codec is not None else AUDIO_PID
        self._cc = {0: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
        self._first = {p: _headers(p, 1, 1) for p in self._cc}
        self._first_af = {p: _headers(p, 1, 3) for p in self._cc}
        self._middle = {p: _headers(p, 0, 1) for p in self._cc}
        self._last_af = {p: _headers(p, 0, 3) for p in self._cc}
        # Per PID and start CC: the 16 middle-packet headers in CC order, as one string.
        self._cycles = {
            p: tuple(b"".join(h[cc:] + h[:cc]) for cc in range(16)) for p, h in self._middle.items()
        }
        self._pat = _section(0x00, 1, struct.pack(">HH", 1, 0xE000 | PMT_PID))
        streams = b""
        if video_codec is not None:
            streams += struct.pack(">BHH", _VIDEO_TYPES[video_codec], 0xE000 | VIDEO_PID, 0xF000)
        if audio_codec is not None:
            streams += struct.pack(">BHH", _AUDIO_TYPES[audio_codec], 0xE000 | AUDIO_PID, 0xF000)
        pmt_body = struct.pack(">HH", 0xE000 | self._pcr_pid, 0xF000) + streams
        self._pmt = _section(0x02, 1, pmt_body)
        self._started = video_codec is None
        self._last_pcr: int | None = None
        self._audio_units = 0

    def header(self) -> bytes:
        """PAT + PMT, continuity counters one behind the next ones (module note)."""
        pat_cc = (self._cc[0] - 1) & 15
        pmt_cc = (self._cc[PMT_PID] - 1) & 15
        return self._psi(0, self._pat, pat_cc) + self._psi(PMT_PID, self._pmt, pmt_cc)

    def mux(self, unit: AccessUnit) -> bytes:
        """Whole TS packets for ``unit`` (PAT/PMT first before a keyframe); b"" if dropped."""
        if unit.kind == "video":
            if unit.codec != self.video_codec or self.video_codec is None:
                return b""
            if unit.keyframe:
                self._started = True
                return self._pes(VIDEO_PID, 0xE0, unit, self._tables(), self._aud_for(unit))
            if not self._started:
                return b""
            return self._pes(VIDEO_PID, 0xE0, unit, b"", self._aud_for(unit))
        if not self._started or unit.codec != self.audio_codec or self.audio_codec is None:
            return b""
        if self.video_codec is None:  # audio only: tables every AUDIO_TABLE_INTERVAL units
            self._audio_units += 1
            if self._audio_units % AUDIO_TABLE_INTERVAL == 1:
                return self._pes(AUDIO_PID, 0xC0, unit, self._tables(), b"")
        return self._pes(AUDIO_PID, 0xC0, unit, b"", b"")

    # -- internals

    def _aud_for(self, unit: AccessUnit) -> bytes:
        """Rule 4: the AUD to put in front of ``unit``, or b"" if it starts with one."""
        data = unit.data
        pos = 4 if data[2:3] == b"\x00" else 3  # the first NAL header follows the start code
        first = data[pos] if len(data) > pos else 0
        if self.video_codec == Codec.H265:
            return b"" if (first >> 1) & 0x3F == 35 else _AUD[Codec.H265]
        return b"" if first & 0x1F == 9 else _AUD[Codec.H264]

    def _tables(self) -> bytes:
        """PAT + PMT with the next continuity counters."""
        pat = self._psi(0, self._pat, self._cc[0])
        pmt = self._psi(PMT_PID, self._pmt, self._cc[PMT_PID])
        self._cc[0] = (self._cc[0] + 1) & 15
        self._cc[PMT_PID] = (self._cc[PMT_PID] + 1) & 15
        return pat + pmt

    def _psi(self, pid: int, section: bytes, cc: int) -> bytes:
        """One packet: header, pointer_field 0, the section, 0xFF filler."""
        head = self._first[pid][cc]
        return head + b"\x00" + section + _STUFFING[: _PAYLOAD - 1 - len(section)]

    def _pes(self, pid: int, sid: int, unit: AccessUnit, lead: bytes, aud: bytes) -> bytes:
        """Rule 3: ``lead`` packets, then one PES (``aud`` + unit data) with PCR/RAI first."""
        pts = unit.pts
        dts = unit.dts if unit.dts is not None else pts
        if pts is None:
            header = b"\x80\x00\x00"
        elif dts is None or dts == pts:
            header = b"\x84\x80\x05" + _timestamp(0x2, pts)
        else:
            header = b"\x84\xc0\x0a" + _timestamp(0x3, pts) + _timestamp(0x1, dts)
        length = len(header) + len(aud) + len(unit.data)
        if length > 0xFFFF:
            length = 0  # §2.4.3.7: unbounded, allowed for video in TS only
        prefix = b"\x00\x00\x01" + bytes((sid,)) + struct.pack(">H", length) + header + aud
        flags = 0x40 if lead else 0  # random_access_indicator: the tables precede a keyframe
        af = b""
        if pid == self._pcr_pid and dts is not None:
            last, self._last_pcr = self._last_pcr, dts
            if last is not None and (dts - last) & _MASK33 > MAX_PCR_STEP:
                flags |= 0x80  # discontinuity_indicator: a new time base (§2.4.3.5)
            af = bytes((flags | 0x10,)) + _pcr(dts)
        elif flags:
            af = bytes((flags,))
        return self._packetize(pid, lead, prefix, unit.data, af)

    def _packetize(self, pid: int, lead: bytes, prefix: bytes, data: bytes, af: bytes) -> bytes:
        """``lead`` + the PES ``prefix + data`` in packets; ``af`` opens the first one.

        The unit's bytes are copied once into the result: as 184-byte slices joined, or for a
        big unit by one numpy block (extra 100 KB temporaries cost more in page faults than
        in copying, and a Python loop over hundreds of packets costs five times as much).
        """
        cc = self._cc[pid]
        size = len(data)
        n = len(prefix) + size
        if af:
            room = _PAYLOAD - 1 - len(af)
            take = room if n > room else n
            stuff = room - take
            head = self._first_af[pid][cc] + bytes((len(af) + stuff,)) + af + _STUFFING[:stuff]
        elif n >= _PAYLOAD:
            take = _PAYLOAD
            head = self._first[pid][cc]
        else:
            take = n
            head = self._first_af[pid][cc] + _FILLS[_PAYLOAD - n]
        pos = take - len(prefix)  # the prefix (at most 33 bytes) fits in the first packet
        cc = (cc + 1) & 15
        full = (size - pos) // _PAYLOAD
        stop = pos + full * _PAYLOAD
        if full < _BULK_PACKETS:
            parts = [lead, head, prefix, data[:pos]]
            middle = self._middle[pid]
            for i in range(pos, stop, _PAYLOAD):
                parts.append(middle[cc])
                parts.append(data[i : i + _PAYLOAD])
                cc = (cc + 1) & 15
            if stop < size:
                parts += (self._last_af[pid][cc], _FILLS[_PAYLOAD - size + stop], data[stop:])
                cc = (cc + 1) & 15
            self._cc[pid] = cc
            return b"".join(parts)
        # A big unit in one numpy block: the first packets and the last as they are, the full
        # packets as 4 header bytes (a 16-packet CC cycle, repeated) beside 184-byte slices.
        first = b"".join((lead, head, prefix, data[:pos]))
        last = b""
        end_cc = (cc + full) & 15
        if stop < size:
            last = self._last_af[pid][end_cc] + _FILLS[_PAYLOAD - size + stop] + data[stop:]
            end_cc = (end_cc + 1) & 15
        self._cc[pid] = end_cc
        block = np.empty(len(first) + full * _PACKET + len(last), dtype=np.uint8)
        block[: len(first)] = np.frombuffer(first, np.uint8)
        middle_rows = block[len(first) : len(first) + full * _PACKET].reshape(full, _PACKET)
        middle_rows[:, 4:] = np.frombuffer(data, np.uint8, full * _PAYLOAD, pos).reshape(full, -1)
        cycle = self._cycles[pid][cc] * (full // 16 + 1)
        middle_rows[:, :4] = np.frombuffer(cycle, np.uint8, full * 4).reshape(full, 4)
        if last:
            block[len(block) - len(last) :] = np.frombuffer(last, np.uint8)
        return block.tobytes()


def _fill(size: int) -> bytes:
    """An adaptation field of ``size`` bytes (length byte included) that is only stuffing."""
    if size == 1:
        return b"\x00"
    return bytes((size - 1, 0)) + _STUFFING[: size - 2]


_FILLS = (b"", *(_fill(size) for size in range(1, _PAYLOAD + 1)))
"""Stuffing adaptation fields by size in bytes (0: none): a lookup on the per-packet path."""

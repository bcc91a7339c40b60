"""Sans-I/O MPEG-PS demuxer for GB/T 28181 streams (ISO/IEC 13818-1 §2.5, PROTOCOL §5.2-5.4).

Rules:
1. ``feed()`` never raises on stream content. Every fault is counted in ``stats`` by kind,
   remembered in ``last_error`` (a ``PsDemuxError`` with the stream offset) and recovered from
   by skipping: to the next start code for garbage, to the next pack header for anything that
   leaves the current frame in doubt (loss, truncation, oversize, an MPEG-1 pack).
2. Only complete structures are consumed. Length-delimited packets (at most 6 + 65535 bytes)
   wait in the buffer until whole; a PES of length 0 (illegal in PS, sent anyway) is streamed
   into the frame up to the next PS start code. So the buffer never holds more than one packet.
3. Output order is stream order: a video frame is emitted when it ends, an audio PES as soon as
   it is complete. Audio whose codec is not known yet (no PSM so far: the GB layout puts the
   first audio pack before the first keyframe's PSM) is held, with everything after it, until
   a PSM names it; past ``MAX_HELD_UNITS`` it is released as ``Codec.UNKNOWN``.

Theory of operation: the input is a continuous PS byte stream cut anywhere (RTP payloads). The
parser finds ``00 00 01 xx`` start codes with ``bytes.find`` and dispatches on ``xx``: pack
header (BA) ends the current video frame; system header (BB) is skipped; the PSM (BC) gives
stream_type per stream id; PES E0-EF carry video, C0-DF audio; BD/BE/BF and the rest are
skipped by length; B9 ends the program. A video frame is the concatenation of the payloads of
consecutive PES of one video stream; it ends at a pack header, at a PES with a different PTS,
at the end code, when the RTP timestamp changes between feeds, or on ``flush()``. Its codec
comes from the PSM, else from the NAL headers; the keyframe flag from the first picture's NAL
type (PSM presence is only a hint, used for codecs we cannot parse).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from media.codec_info import Codec, is_keyframe, sniff_video_codec
from media.ps._readers import (
    FAULT_KINDS,
    PsDemuxStats,
    find_ps_start,
    parse_pes_header,
    parse_psm,
)
from media.ps._units import (
    AUDIO_CODECS,
    PTS_MODULO,
    STREAM_TYPE_CODEC,
    VIDEO_CODECS,
    AccessUnit,
    PsDemuxError,
)

__all__ = [
    "FAULT_KINDS",
    "MAX_FRAME_SIZE",
    "MAX_HELD_BYTES",
    "MAX_HELD_UNITS",
    "MAX_PENDING_UNITS",
    "PsDemuxStats",
    "PsDemuxer",
]

MAX_FRAME_SIZE = 4 * 1024 * 1024
"""Bytes of one video frame being assembled; beyond it the frame is dropped (STYLE.md)."""
MAX_PENDING_UNITS = 256
"""Access units waiting for ``next_unit()``; beyond it the oldest is dropped and counted."""
MAX_HELD_UNITS = 64
"""Units held while waiting for a PSM to name the audio codec (rule 3)."""
MAX_HELD_BYTES = 8 * 1024 * 1024
"""Bytes of the units held (rule 3)."""

_START = b"\x00\x00\x01"
_PACK = b"\x00\x00\x01\xba"
_TS_MASK = PTS_MODULO - 1

MARKER_LEARN_FRAMES = 3
"""Frames whose RTP marker must agree with the PS frame boundary before it is trusted."""


class PsDemuxer:
    """Sans-I/O PS demuxer: ``feed()`` payload bytes, take ``AccessUnit``s from
    ``next_unit()``/``pop_units()``. Bounded by ``max_frame`` bytes per video frame."""

    def __init__(
        self, *, max_frame: int = MAX_FRAME_SIZE, max_units: int = MAX_PENDING_UNITS
    ) -> None:
        if max_frame < 1 or max_units < 1:
            raise ValueError("max_frame and max_units must be at least 1")
        self.max_frame = max_frame
        self.max_units = max_units
        self.stats = PsDemuxStats()
        self.last_error: PsDemuxError | None = None
        """The latest fault, for a rate-limited log line."""
        self.video_codec: Codec | None = None
        """Last video codec seen (PSM or sniffed)."""
        self.audio_codec: Codec | None = None
        """Last audio codec seen in a PSM."""
        self.stream_types: dict[int, int] = {}
        """stream_id -> stream_type from the latest PSM."""
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._await_pack = True  # skip to the next pack header (start, loss, oversize)
        self._in_garbage = False
        self._open_sid: int | None = None  # PES of length 0 being read to the next start code
        self._open_keep = False
        self._video_sid: int | None = None
        self._audio_sid: int | None = None
        self._sniffed: Codec | None = None
        self._rtp_ts: int | None = None
        self._psm_in_pack = False
        self._v_open = False
        self._v_chunks: list[bytes] = []
        self._v_size = 0
        self._v_pts: int | None = None
        self._v_dts: int | None = None
        self._v_hint = False  # a PSM preceded the frame in its pack
        self._v_rtp_timed = False  # the frame's PTS is the RTP timestamp (no PES PTS)
        self._a_chunks: list[bytes] = []
        self._a_size = 0
        self._a_pts: int | None = None
        self._a_dts: int | None = None
        self._units: deque[AccessUnit] = deque()
        self._held: list[AccessUnit] = []
        self._held_bytes = 0
        self._hold = True
        # RTP marker (PROTOCOL §5.3: set on a frame's last packet). Trusted only after
        # MARKER_LEARN_FRAMES frames where it matched the boundary the PS itself shows,
        # and distrusted for good once a frame goes on after a marker: closing at the
        # marker saves one frame interval of latency, but some senders set it anywhere.
        self._marker_trust = 0  # frames agreed so far; MARKER_LEARN_FRAMES = trusted; -1 never
        self._marker_pending = False  # learning: a marker came at a clean frame boundary
        self._marker_pts: int | None = None  # PTS of the last frame the marker closed
        self._marker_tail = 0  # learning, open PES: bytes held back at the marker (its tail)

    # -- input

    def feed(
        self,
        payload: bytes | bytearray | memoryview,
        rtp_timestamp: int | None = None,
        marker: bool = False,
    ) -> None:
        """Append PS bytes (one RTP payload, any cut); ``rtp_timestamp`` in 90 kHz ticks;
        ``marker`` is the RTP marker bit (the last packet of a frame, once trusted)."""
        if rtp_timestamp is not None:
            if (
                self._v_rtp_timed
                and rtp_timestamp != self._rtp_ts
                and self._open_sid is None
                and not self._buf
            ):
                # PROTOCOL §5.3: a new RTP timestamp is a new frame. Used only for frames
                # without a PES PTS: otherwise the PTS and pack headers already tell, and a
                # 2016 device stamping each packet anew would split its frames.
                self._end_frame()
            self._rtp_ts = rtp_timestamp
        if not payload:
            return
        if (
            self.stats.packs == 0
            and not self.stats.mpeg_ts  # once per stream: the shell rejects it
            and payload[0] == 0x47
            and len(payload) % 188 == 0
            and all(payload[i] == 0x47 for i in range(0, len(payload), 188))
        ):
            self._fault("mpeg_ts", "payload looks like MPEG-TS, not PS", 0)
        self._buf += payload
        self._parse()
        if marker and self._marker_trust >= 0:
            self._on_marker()

    def _on_marker(self) -> None:
        """The packet just parsed carried the marker: end the video frame if the PS agrees
        it can end here (nothing half-read but the open video PES)."""
        if not self._v_open or not self._v_chunks:
            return
        open_sid = self._open_sid
        if open_sid is not None and (open_sid != self._video_sid or not self._open_keep):
            return
        if open_sid is None and self._buf:
            return  # a structure is half-read: the frame cannot end at this packet
        if self._marker_trust < MARKER_LEARN_FRAMES:
            self._marker_pending = True
            self._marker_tail = len(self._buf) if open_sid is not None else 0
            return
        if open_sid is not None:  # a PES without length: its tail is the rest of the buffer
            self._open_append(0, len(self._buf))
            self._open_sid = None
            self._base += len(self._buf)
            self._buf.clear()
        pts = self._v_pts
        self._end_frame()
        self.stats.marker_frames += 1
        self._marker_pts = pts

    def _marker_lied(self) -> None:
        self._marker_trust = -1
        self._marker_pending = False
        self.stats.marker_distrusted = 1

    def notify_loss(self) -> None:
        """Packets were lost: drop the partial frame and resync at the next pack header."""
        self.stats.loss += 1
        self._drop_frame()
        self._a_chunks = []
        self._open_sid = None
        self._base += len(self._buf)
        self._buf.clear()
        self._await_pack = True
        self._in_garbage = False

    def flush(self) -> None:
        """End of input: emit the frame being assembled and anything held."""
        buf = self._buf
        if self._open_sid is not None:
            self._open_append(0, len(buf))
            self._close_open()
        elif buf and not self._await_pack:
            start = buf.find(_START)
            if start >= 0 and len(buf) - start > 3 and buf[start + 3] >= 0xB9:
                self._fault("truncated", "input ends inside a packet", start)
                if buf[start + 3] == self._video_sid:
                    self._drop_frame()
                self._await_pack = True
            elif buf.strip(b"\x00"):
                self._garbage(0, len(buf))
        self._base += len(buf)
        buf.clear()
        self._end_frame()
        self._release_held()

    # -- output

    def next_unit(self) -> AccessUnit | None:
        """The next access unit in stream order, or None."""
        return self._units.popleft() if self._units else None

    def pop_units(self) -> list[AccessUnit]:
        """All access units ready, in stream order."""
        units = list(self._units)
        self._units.clear()
        return units

    # -- parsing

    def _parse(self) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        while pos < n:
            if self._open_sid is not None:
                end = find_ps_start(buf, pos, n)
                if end < 0:
                    stop = max(pos, n - 3)  # a start code may straddle the next feed
                    self._open_append(pos, stop)
                    pos = stop
                    break
                self._open_append(pos, end)
                pos = end
                self._close_open()
                continue
            if self._await_pack:
                i = buf.find(_PACK, pos)
                if i < 0:
                    pos = max(pos, n - 3)
                    break
                pos = i
                self._await_pack = False
            i = buf.find(_START, pos)
            if i != pos:
                if i < 0:
                    stop = max(pos, n - 2)
                    self._garbage(pos, stop)
                    pos = stop
                    break
                self._garbage(pos, i)
                pos = i
            if n - pos < 4:
                break
            nxt = self._structure(pos, n)
            if nxt < 0:
                break
            pos = nxt
        if pos:
            del buf[:pos]
            self._base += pos

    def _structure(self, pos: int, n: int) -> int:
        """Consume the structure whose start code is at ``pos``; new offset, or -1 for more."""
        buf = self._buf
        sid = buf[pos + 3]
        if sid == 0xBA:
            if n - pos < 14:
                return -1
            self._end_frame()
            if buf[pos + 4] & 0xC0 != 0x40:
                mpeg1 = buf[pos + 4] >> 4 == 2
                self._fault("bad_pack", "MPEG-1 pack header" if mpeg1 else "bad pack header", pos)
                self._await_pack = True
                return pos + 4
            size = 14 + (buf[pos + 13] & 7)
            if n - pos < size:
                return -1
            self.stats.packs += 1
            self._psm_in_pack = False
            self._in_garbage = False
            return pos + size
        if sid < 0xB9:
            self._garbage(pos, pos + 3)
            return pos + 3
        if sid == 0xB9:
            self._end_frame()
            self._in_garbage = False
            return pos + 4
        if n - pos < 6:
            return -1
        video = 0xE0 <= sid <= 0xEF
        audio = 0xC0 <= sid <= 0xDF
        end = pos + 6 + (buf[pos + 4] << 8 | buf[pos + 5])
        if end == pos + 6 and (video or audio):
            return self._start_open_pes(pos, n, sid, video)
        if end > n:
            return -1
        self._in_garbage = False
        if video or audio:
            return self._pes(pos, end, sid, video)
        if sid == 0xBB or sid == 0xBC:
            # Small structured packets: no PS start code belongs inside them.
            cut = find_ps_start(buf, pos + 6, end)
        else:
            cut = buf.find(_PACK, pos + 6, end)  # vendor data may hold anything else
        if cut >= 0:
            self._fault("truncated", f"packet 0x{sid:02X} cut short by a start code", pos)
            return cut
        if sid == 0xBC:
            self._psm(pos, end)
        else:
            self.stats.skipped_packets += 1
        return end

    def _track(self, sid: int, video: bool) -> bool:
        """Whether ``sid`` is the video (or audio) stream we assemble; latch the first one."""
        if video:
            if self._video_sid is None:
                self._video_sid = sid
            mine = sid == self._video_sid
        else:
            if self._audio_sid is None:
                self._audio_sid = sid
            mine = sid == self._audio_sid
        if not mine:
            self.stats.other_stream += 1
        return mine

    def _pes(self, pos: int, end: int, sid: int, video: bool) -> int:
        buf = self._buf
        try:
            pts, dts, start = parse_pes_header(buf, pos, end)
        except PsDemuxError as exc:
            self._fault(exc.kind, exc.reason, pos)
            if video and sid == self._video_sid:
                self._drop_frame()
            return end
        if video and not self._video_is_mpeg4():
            # H.26x payloads never hold 00 00 01 xx with xx >= 0xB9 (forbidden_zero_bit).
            cut = find_ps_start(buf, start, end)
        else:
            cut = buf.find(_PACK, start, end)
        if cut >= 0:
            self._fault("truncated", f"PES 0x{sid:02X} cut short by a PS start code", pos)
            if video and sid == self._video_sid:
                self._drop_frame()
            return cut
        if not self._track(sid, video):
            return end
        if video:
            self._video_start(pts, dts)
            self._video_append(bytes(buf[start:end]))
        else:
            self._audio_unit(pts, dts, bytes(buf[start:end]))
        return end

    def _start_open_pes(self, pos: int, n: int, sid: int, video: bool) -> int:
        buf = self._buf
        if n - pos < 9 or n - pos < 9 + buf[pos + 8]:
            return -1
        self._in_garbage = False
        self._open_sid = sid
        self._open_keep = False
        try:
            pts, dts, start = parse_pes_header(buf, pos, n)
        except PsDemuxError as exc:
            self._fault(exc.kind, exc.reason, pos)
            if video and sid == self._video_sid:
                self._drop_frame()
            return pos + 6
        if not self._track(sid, video):
            return start
        self._open_keep = True
        if video:
            self._video_start(pts, dts)
        else:
            self._a_chunks, self._a_size = [], 0
            self._a_pts, self._a_dts = pts, dts
        return start

    def _open_append(self, start: int, stop: int) -> None:
        if stop <= start or not self._open_keep:
            return
        chunk = bytes(self._buf[start:stop])
        if self._open_sid == self._video_sid:
            if self._marker_pending and start == 0 and stop <= self._marker_tail:
                # learning: the bytes held back at the marker are still that frame's tail
                self._marker_tail = 0
                self._v_size += len(chunk)
                self._v_chunks.append(chunk)
                return
            self._video_append(chunk)
            return
        self._a_size += len(chunk)
        if self._a_size > self.max_frame:
            self._fault("oversize", "audio PES exceeds the frame cap", start)
            self._a_chunks = []
            self._open_sid = None
            self._await_pack = True
            return
        self._a_chunks.append(chunk)

    def _close_open(self) -> None:
        sid, self._open_sid = self._open_sid, None
        if self._open_keep and sid is not None and sid == self._audio_sid:
            self._audio_unit(self._a_pts, self._a_dts, b"".join(self._a_chunks))
            self._a_chunks = []

    def _psm(self, pos: int, end: int) -> None:
        try:
            types = parse_psm(self._buf, pos, end)
        except PsDemuxError as exc:
            self._fault(exc.kind, exc.reason, pos)
            return
        self.stats.psm += 1
        self._psm_in_pack = True
        self.stream_types = types
        video = [s for s in types if 0xE0 <= s <= 0xEF]
        audio = [s for s in types if 0xC0 <= s <= 0xDF]
        if video and self._video_sid not in video:
            self._video_sid = video[0]
        if audio and self._audio_sid not in audio:
            self._audio_sid = audio[0]
        codec = self._mapped(self._video_sid, VIDEO_CODECS)
        if codec is not None:
            self.video_codec = codec
        codec = self._mapped(self._audio_sid, AUDIO_CODECS)
        if codec is not None:
            self.audio_codec = codec
        if self._held:
            self._release_held()

    # -- units

    def _mapped(self, sid: int | None, kinds: frozenset[Codec]) -> Codec | None:
        st = self.stream_types.get(sid) if sid is not None else None
        codec = STREAM_TYPE_CODEC.get(st) if st is not None else None
        return codec if codec in kinds else None

    def _video_is_mpeg4(self) -> bool:
        codec = self._mapped(self._video_sid, VIDEO_CODECS) or self._sniffed
        return codec == Codec.MPEG4

    def _video_start(self, pts: int | None, dts: int | None) -> None:
        if pts is not None and self._v_open and pts != self._v_pts:
            self._end_frame()  # PROTOCOL §5.3: a video PES with a new PTS starts a frame
        if self._v_open:
            if self._marker_pending:
                self._marker_lied()  # learning: the frame went on after its "last" packet
            return
        if self._marker_pts is not None:
            if pts is not None and pts == self._marker_pts:
                self._marker_lied()  # trusted, yet the frame the marker ended goes on
            self._marker_pts = None
        self._v_rtp_timed = pts is None and self._rtp_ts is not None
        if pts is None and self._rtp_ts is not None:
            pts = dts = self._rtp_ts & _TS_MASK
        self._v_open = True
        self._v_pts, self._v_dts = pts, dts
        self._v_hint = self._psm_in_pack

    def _video_append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._marker_pending and self._v_chunks:
            self._marker_lied()
        self._v_size += len(chunk)
        if self._v_size > self.max_frame:
            self._fault("oversize", f"video frame exceeds {self.max_frame} bytes", 0)
            self._drop_frame()
            self._open_sid = None
            self._await_pack = True
            return
        self._v_chunks.append(chunk)

    def _drop_frame(self) -> None:
        self._marker_pending = False
        self._v_open = False
        self._v_rtp_timed = False
        self._v_chunks = []
        self._v_size = 0

    def _end_frame(self) -> None:
        if not self._v_open:
            return
        if self._marker_pending:  # learning: the PS ended the frame where the marker said
            self._marker_pending = False
            self._marker_trust += 1
        chunks = self._v_chunks
        self._drop_frame()
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        codec = self._mapped(self._video_sid, VIDEO_CODECS)
        from_psm = codec is not None
        if codec is None:
            if self._sniffed is None:
                self._sniffed = sniff_video_codec(data)
            codec = self._sniffed or Codec.UNKNOWN
        key = is_keyframe(codec, data)
        if key is None:
            key = self._v_hint
        if not from_psm and (key or self.stats.video_units == 0):
            self.stats.no_psm += 1
        if codec is not Codec.UNKNOWN:
            self.video_codec = codec
        self.stats.video_units += 1
        self._emit(AccessUnit("video", codec, self._v_pts, self._v_dts, key, data))

    def _audio_unit(self, pts: int | None, dts: int | None, data: bytes) -> None:
        if not data:
            return
        if pts is None and self._rtp_ts is not None:
            pts = dts = self._rtp_ts & _TS_MASK
        codec = self._mapped(self._audio_sid, AUDIO_CODECS) or Codec.UNKNOWN
        self.stats.audio_units += 1
        self._emit(AccessUnit("audio", codec, pts, dts, True, data))

    def _emit(self, unit: AccessUnit) -> None:
        if self._hold and (self._held or (unit.kind == "audio" and unit.codec is Codec.UNKNOWN)):
            self._held.append(unit)
            self._held_bytes += len(unit.data)
            if len(self._held) > MAX_HELD_UNITS or self._held_bytes > MAX_HELD_BYTES:
                self._hold = False  # this stream has no PSM for its audio: stop waiting
                self._fault("no_psm", "no PSM names the audio stream", 0)
                self._release_held()
            return
        if len(self._units) >= self.max_units:
            self._units.popleft()
            self._fault("overflow", "access unit queue full, oldest dropped", 0)
        self._units.append(unit)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        self._held_bytes = 0
        hold, self._hold = self._hold, False
        audio = self._mapped(self._audio_sid, AUDIO_CODECS)
        video = self._mapped(self._video_sid, VIDEO_CODECS)
        for unit in held:
            if unit.codec is Codec.UNKNOWN:
                codec = audio if unit.kind == "audio" else video
                if codec is not None:
                    key = is_keyframe(codec, unit.data) if unit.kind == "video" else None
                    unit = replace(
                        unit, codec=codec, keyframe=unit.keyframe if key is None else key
                    )
            self._emit(unit)
        self._hold = hold

    # -- faults

    def _fault(self, kind: str, reason: str, pos: int) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self.last_error = PsDemuxError(kind, reason, self._base + pos)

    def _garbage(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        if not self._in_garbage:
            self._in_garbage = True
            self._fault("garbage", "bytes outside any PS structure", start)
        self.stats.garbage_bytes += stop - start

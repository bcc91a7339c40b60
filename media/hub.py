"""Fan-out of one live stream: GOP cache, one muxer per format, bounded consumer queues.

Rules:
1. No I/O and no wall clock. Time comes from the injected ``clock`` (``loop.time`` in
   production), read once per ``push``; consumers are async iterators, nothing else is async.
2. Remux work is done once per stream and format: the first consumer of a format creates its
   muxer, every unit is muxed once, and every consumer of that format gets the same bytes
   object. The muxer goes when the format's last consumer goes.
3. Every buffer is bounded. The GOP cache holds at most ``gop_max_units`` units and
   ``gop_max_bytes`` bytes (units plus the muxed copies of every format). When the current GOP
   outgrows either cap the cache is dropped until the next keyframe; joiners in between wait
   for that keyframe. A consumer queue holds at most ``max_chunks`` chunks and ``max_bytes``
   bytes; when full the consumer skips everything up to the next keyframe chunk (counted in
   ``skips``/``skipped``), and when its oldest queued chunk is older than ``max_lag`` seconds
   it is closed with reason ``"lagging"``.

Theory of operation: a *sync point* is a video keyframe, or any audio unit in a stream that has
shown no video. The hub keeps the units from the last sync point (the GOP). Each format keeps
the muxed chunks of the same GOP and ``header()`` as it was just before that GOP's first chunk
was muxed. A consumer's byte stream is always ``header()`` (taken before the ``mux()`` call of
its first chunk) followed by ``mux()`` outputs in order, starting at a sync point: a joiner
gets the format's GOP at once, so a player decodes its first frame without waiting; with no
GOP cached (stream start, after an overflow) it waits for the next sync point. A format whose
consumers arrived before the first keyframe creates its muxer at that keyframe, so the factory
can read the codecs from the stream (``info()``, the receiver's PSM codecs).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from media.codec_info import Codec, video_size
from media.ps import AccessUnit

__all__ = [
    "DEFAULT_GOP_MAX_BYTES",
    "DEFAULT_GOP_MAX_UNITS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_LAG",
    "Consumer",
    "HubClosed",
    "Muxer",
    "MuxerFactory",
    "StreamHub",
    "StreamInfo",
]

log = logging.getLogger("gbgw.media.hub")

DEFAULT_GOP_MAX_BYTES = 8 << 20
"""Bytes of the GOP cache: units plus the muxed copies of all formats."""
DEFAULT_GOP_MAX_UNITS = 1500
"""Units of the GOP cache (a 25 fps stream with audio and a 20 s GOP)."""
DEFAULT_MAX_CHUNKS = 512
"""Chunks queued for one consumer before it skips to the next keyframe."""
DEFAULT_MAX_BYTES = 4 << 20
"""Bytes queued for one consumer before it skips to the next keyframe."""
DEFAULT_MAX_LAG = 5.0
"""Seconds the oldest queued chunk may wait before its consumer is closed as lagging."""
RAW = "raw"
"""The pseudo-format of ``subscribe_units()``: access units, no muxer."""
_FPS_SPAN = 2 * 90000  # 90 kHz ticks of video per frame-rate estimate
_FPS_MAX_SPAN = 10 * 90000  # a longer span is a timestamp jump, not a measurement
_TS_MASK = (1 << 33) - 1
_RATE_WINDOW = 2.0  # seconds per bit-rate estimate

T = TypeVar("T")


class Muxer(Protocol):
    """Access units in, one container byte stream out (FLV, TS, PS); one per stream and format.

    A consumer receives ``header()`` as returned just before the ``mux()`` call of its first
    chunk, then ``mux()`` outputs in order; the first is always a keyframe's. ``header()`` may
    change as the muxer learns the codec configuration (the first keyframe).
    """

    content_type: str

    def header(self) -> bytes:
        """Bytes every new consumer gets first (FLV header and sequence headers, PAT/PMT)."""
        ...

    def mux(self, unit: AccessUnit) -> bytes:
        """Bytes for this unit; b"" when the unit is dropped."""
        ...


MuxerFactory = Callable[[], Muxer]


class HubClosed(RuntimeError):
    """The stream has ended; nothing can subscribe any more."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the hub has learnt about its stream."""

    video_codec: Codec | None
    audio_codec: Codec | None
    width: int | None
    """Pixels, from the last keyframe's SPS (None until known)."""
    height: int | None
    fps: float | None
    """Video frames per second over the last ~2 s of timestamps."""
    bitrate: float | None
    """Bits per second of access-unit payload over the last ~2 s of arrivals."""
    first_keyframe_at: float | None
    """``clock()`` time of the first keyframe."""
    units: int
    bytes: int
    keyframes: int
    consumers: int
    gop_units: int
    gop_bytes: int
    """Bytes of the cached GOP, units plus muxed copies."""


class Consumer(Generic[T]):
    """One viewer's bounded queue of chunks (bytes of a format, or ``AccessUnit``s).

    ``async for chunk in consumer`` until the hub ends (queued data is drained first) or the
    consumer is closed (``close()``, lagging). ``close_reason`` says why it ended.
    """

    def __init__(
        self,
        hub: StreamHub,
        form: _Format[T],
        content_type: str,
        max_chunks: int,
        max_bytes: int,
        max_lag: float,
    ) -> None:
        if max_chunks < 1 or max_bytes < 1 or max_lag <= 0:
            raise ValueError("consumer limits must be positive")
        self.format = form.name
        self.content_type = content_type
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self.close_reason: str | None = None
        self.skips = 0
        """Times the queue was full and the consumer began skipping to a keyframe."""
        self.skipped = 0
        """Chunks dropped while skipping."""
        self.delivered = 0
        self._hub: StreamHub | None = hub
        self._form = form
        self._queue: deque[tuple[T, int, float]] = deque()
        self._bytes = 0
        self._skipping = False
        self._waiter: asyncio.Future[None] | None = None

    # -- consumer side

    def __aiter__(self) -> Consumer[T]:
        return self

    async def __anext__(self) -> T:
        """The next chunk; waits for one; StopAsyncIteration once ended and drained."""
        queue = self._queue
        while not queue:
            if self.close_reason is not None:
                raise StopAsyncIteration
            if self._waiter is not None:
                raise RuntimeError("a consumer is read by one task at a time")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        chunk, size, _ = queue.popleft()
        self._bytes -= size
        self.delivered += 1
        return chunk

    def get_nowait(self) -> T | None:
        """The next queued chunk, or None."""
        if not self._queue:
            return None
        chunk, size, _ = self._queue.popleft()
        self._bytes -= size
        self.delivered += 1
        return chunk

    @property
    def closed(self) -> bool:
        """No more chunks will be queued (some may still be waiting to be read)."""
        return self.close_reason is not None

    @property
    def skipping(self) -> bool:
        """The queue overflowed: chunks are dropped until the next keyframe chunk."""
        return self._skipping

    @property
    def queued_chunks(self) -> int:
        """Chunks waiting to be read."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be read (access units: their ``data``)."""
        return self._bytes

    def close(self) -> None:
        """Leave the stream now; queued chunks are dropped. Idempotent."""
        self._queue.clear()
        self._bytes = 0
        if self.close_reason is None:
            self.close_reason = "closed"
            hub, self._hub = self._hub, None
            if hub is not None:
                hub._drop(self._form, self)
        self._wake()

    async def aclose(self) -> None:
        """``close()`` for ``async with``/``contextlib.aclosing`` users."""
        self.close()

    # -- hub side

    def _put(self, chunk: T, size: int, now: float) -> None:
        self._queue.append((chunk, size, now))
        self._bytes += size
        self._wake()

    def _offer(self, chunk: T, size: int, sync: bool, now: float) -> bool:
        """Queue a live chunk under the overflow policy; False when the consumer lags."""
        queue = self._queue
        full = False
        if queue:
            if now - queue[0][2] > self.max_lag:
                return False
            full = len(queue) >= self.max_chunks or self._bytes + size > self.max_bytes
        if self._skipping:
            if full or not sync:
                self.skipped += 1
                return True
            self._skipping = False
        elif full:
            self._skipping = True
            self.skips += 1
            self.skipped += 1
            return True
        queue.append((chunk, size, now))
        self._bytes += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _end(self, reason: str, *, drop: bool) -> None:
        """The hub ends this consumer: queued chunks are still read unless ``drop``."""
        self._hub = None
        if self.close_reason is None:
            self.close_reason = reason
        if drop:
            self._queue.clear()
            self._bytes = 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Format(Generic[T]):
    """One format's muxer, GOP of muxed chunks and consumers."""

    __slots__ = (
        "create",
        "gop",
        "gop_bytes",
        "gop_header",
        "gop_ok",
        "header",
        "live",
        "mux",
        "name",
        "ready",
        "size_of",
        "waiting",
    )

    def __init__(self, name: str, size_of: Callable[[T], int]) -> None:
        self.name = name
        self.size_of = size_of
        self.ready = False  # muxer created
        self.create: Callable[[], None] = _nothing
        self.mux: Callable[[AccessUnit], T] | None = None
        self.header: Callable[[], T | None] = _no_header
        self.live: list[Consumer[T]] = []
        self.waiting: list[Consumer[T]] = []  # for the next sync point
        self.gop: list[tuple[T, int]] = []
        self.gop_bytes = 0
        self.gop_header: T | None = None
        self.gop_ok = False

    def consumers(self) -> int:
        return len(self.live) + len(self.waiting)


def _no_header() -> None:
    return None


def _nothing() -> None:
    pass


class StreamHub:
    """Fan-out of one live stream to its consumers; see the module rules."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        gop_max_bytes: int = DEFAULT_GOP_MAX_BYTES,
        gop_max_units: int = DEFAULT_GOP_MAX_UNITS,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_lag: float = DEFAULT_MAX_LAG,
        on_consumers: Callable[[int], None] | None = None,
        stream_id: str = "",
    ) -> None:
        """``clock``: monotonic seconds; ``on_consumers(count)`` runs on every change of the
        consumer count (the gateway's idle-close timer); limits as the module rules say."""
        if gop_max_bytes < 1 or gop_max_units < 1:
            raise ValueError("GOP cache limits must be positive")
        if max_chunks < 1 or max_bytes < 1 or max_lag <= 0:
            raise ValueError("consumer limits must be positive")
        self._clock = clock
        self.gop_max_bytes = gop_max_bytes
        self.gop_max_units = gop_max_units
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self.stream_id = stream_id
        self._on_consumers = on_consumers
        self._factories: dict[str, MuxerFactory] = {}
        self._content_types: dict[str, str] = {}
        self._formats: dict[str, _Format[bytes]] = {}
        self._raw: _Format[AccessUnit] = _Format(RAW, _unit_size)
        self._raw.mux = _identity
        self._raw.ready = True
        self._count = 0
        self.closed = False
        self.close_reason: str | None = None
        self._gop: list[AccessUnit] = []
        self._gop_bytes = 0
        self._muxed_bytes = 0
        self._gop_ok = False
        self._has_video = False
        # stream info and counters
        self._video_codec: Codec | None = None
        self._audio_codec: Codec | None = None
        self._size: tuple[int, int] | None = None
        self._first_key_at: float | None = None
        self._units = 0
        self._bytes = 0
        self._keyframes = 0
        self._fps: float | None = None
        self._fps_t0: int | None = None
        self._fps_n = 0
        self._rate: float | None = None
        self._rate_t0: float | None = None
        self._rate_bytes = 0
        self._lagging = 0
        self._gop_overflows = 0
        self._muxer_errors = 0

    # -- formats and consumers

    def register_format(self, name: str, factory: MuxerFactory, content_type: str = "") -> None:
        """Make ``name`` subscribable; ``factory()`` builds its muxer when first needed."""
        if name == RAW:
            raise ValueError(f"{RAW!r} is reserved for subscribe_units()")
        self._factories[name] = factory
        self._content_types[name] = content_type

    def subscribe(
        self,
        fmt: str,
        *,
        max_chunks: int | None = None,
        max_bytes: int | None = None,
        max_lag: float | None = None,
    ) -> Consumer[bytes]:
        """A consumer of the muxed ``fmt`` byte stream, starting at the last keyframe."""
        if self.closed:
            raise HubClosed(f"stream ended: {self.close_reason}")
        if fmt not in self._factories:
            raise ValueError(f"unknown stream format {fmt!r}")
        form = self._formats.get(fmt)
        if form is None:
            form = _Format(fmt, len)
            form.create = self._creator(form)
            self._formats[fmt] = form
        if not form.ready and self._gop_ok:
            try:
                form.create()
            except Exception:
                if not form.consumers():
                    del self._formats[fmt]
                raise
            now = self._clock()
            for unit in self._gop:  # catch up: each cached unit muxed once for this format
                self._feed(form, unit, len(unit.data), self._is_sync(unit), now)
            if self._formats.get(fmt) is not form:
                raise RuntimeError(f"the {fmt} muxer failed on the cached GOP (logged)")
            self._check_gop()
        consumer: Consumer[bytes] = Consumer(
            self,
            form,
            self._content_types[fmt],
            self.max_chunks if max_chunks is None else max_chunks,
            self.max_bytes if max_bytes is None else max_bytes,
            self.max_lag if max_lag is None else max_lag,
        )
        self._join(form, consumer)
        return consumer

    def subscribe_units(
        self,
        *,
        max_chunks: int | None = None,
        max_bytes: int | None = None,
        max_lag: float | None = None,
    ) -> Consumer[AccessUnit]:
        """A consumer of the access units themselves (RTP cascade, WebRTC), from the last
        keyframe."""
        if self.closed:
            raise HubClosed(f"stream ended: {self.close_reason}")
        consumer: Consumer[AccessUnit] = Consumer(
            self,
            self._raw,
            "",
            self.max_chunks if max_chunks is None else max_chunks,
            self.max_bytes if max_bytes is None else max_bytes,
            self.max_lag if max_lag is None else max_lag,
        )
        if self._gop_ok and self._gop:
            now = self._clock()
            for unit in self._gop:  # the hub's own GOP: raw keeps no copy
                consumer._put(unit, len(unit.data), now)
            self._raw.live.append(consumer)
        else:
            self._raw.waiting.append(consumer)
        self._set_count(self._count + 1)
        return consumer

    @property
    def consumers(self) -> int:
        """Consumers of every format, raw included."""
        return self._count

    def formats(self) -> tuple[str, ...]:
        """Formats with consumers now (each has one muxer once the stream has a keyframe)."""
        return tuple(self._formats)

    # -- input

    def push(self, unit: AccessUnit) -> None:
        """One access unit from the receiver, in stream order."""
        if self.closed:
            return
        now = self._clock()
        size = len(unit.data)
        sync = self._is_sync(unit)
        self._account(unit, size, now)
        if sync:
            self._gop = [unit]
            self._gop_bytes = size
            self._gop_ok = True
        elif self._gop_ok:
            self._gop.append(unit)
            self._gop_bytes += size
        raw = self._raw
        if raw.live or raw.waiting:
            self._feed(raw, unit, size, sync, now)
        for form in tuple(self._formats.values()):
            self._feed(form, unit, size, sync, now)
        if self._gop_ok:
            self._check_gop()

    def close(self, reason: str = "closed") -> None:
        """End the stream: every consumer drains its queue and stops; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        forms: list[_Format[bytes] | _Format[AccessUnit]] = [self._raw, *self._formats.values()]
        for form in forms:
            for consumer in (*form.live, *form.waiting):
                consumer._end(reason, drop=False)
            form.live.clear()
            form.waiting.clear()
        self._formats.clear()
        self._gop = []
        self._gop_ok = False
        self._gop_bytes = self._muxed_bytes = 0
        self._set_count(0)

    # -- state

    def info(self) -> StreamInfo:
        """What is known about the stream now."""
        w, h = self._size if self._size is not None else (None, None)
        return StreamInfo(
            video_codec=self._video_codec,
            audio_codec=self._audio_codec,
            width=w,
            height=h,
            fps=self._fps,
            bitrate=self._rate,
            first_keyframe_at=self._first_key_at,
            units=self._units,
            bytes=self._bytes,
            keyframes=self._keyframes,
            consumers=self._count,
            gop_units=len(self._gop),
            gop_bytes=self._gop_bytes + self._muxed_bytes,
        )

    def stats(self) -> dict[str, int]:
        """Counters: consumers closed as lagging, GOP cache overflows, muxer failures."""
        return {
            "consumers": self._count,
            "lagging_closed": self._lagging,
            "gop_overflows": self._gop_overflows,
            "muxer_errors": self._muxer_errors,
        }

    # -- internals

    def _is_sync(self, unit: AccessUnit) -> bool:
        if unit.kind == "video":
            self._has_video = True
            return unit.keyframe
        return not self._has_video

    def _creator(self, form: _Format[bytes]) -> Callable[[], None]:
        def create() -> None:
            muxer = self._factories[form.name]()
            form.mux = muxer.mux
            form.header = muxer.header
            form.ready = True
            if not self._content_types[form.name]:
                self._content_types[form.name] = muxer.content_type

        return create

    def _feed(self, form: _Format[T], unit: AccessUnit, size: int, sync: bool, now: float) -> None:
        """Mux ``unit`` once for ``form`` and fan the chunk out to its consumers."""
        if not form.ready:
            if not sync:
                return
            try:
                form.create()
            except Exception:
                self._fail(form, "muxer factory failed")
                return
        mux = form.mux
        assert mux is not None
        header = form.header() if sync else None
        try:
            chunk = mux(unit)
        except Exception:
            self._fail(form, "mux failed")
            return
        keep = form is not self._raw  # raw consumers replay the hub's own unit GOP
        if sync and keep:
            self._muxed_bytes -= form.gop_bytes
            form.gop = []
            form.gop_bytes = 0
            form.gop_header = header
            form.gop_ok = bool(chunk) and self._gop_ok
        if not chunk:
            return
        csize = form.size_of(chunk)
        if keep and form.gop_ok:
            form.gop.append((chunk, csize))
            form.gop_bytes += csize
            self._muxed_bytes += csize
        if sync and form.waiting:
            if header:
                hsize = form.size_of(header)
                for consumer in form.waiting:
                    consumer._put(header, hsize, now)
            # they get this chunk below, with everyone else
            form.live.extend(form.waiting)
            form.waiting.clear()
        lagging: list[Consumer[T]] | None = None
        for consumer in form.live:
            if not consumer._offer(chunk, csize, sync, now):
                if lagging is None:
                    lagging = []
                lagging.append(consumer)
        if lagging:
            for consumer in lagging:
                self._lagging += 1
                log.warning(
                    "hub.consumer_lagging stream_id=%s format=%s queued=%d",
                    self.stream_id,
                    form.name,
                    consumer.queued_chunks,
                )
                consumer._end("lagging", drop=True)
                self._drop(form, consumer)

    def _join(self, form: _Format[T], consumer: Consumer[T]) -> None:
        now = self._clock()
        if form.gop_ok and form.gop:
            header = form.gop_header
            if header:
                consumer._put(header, form.size_of(header), now)
            for chunk, size in form.gop:
                consumer._put(chunk, size, now)
            form.live.append(consumer)
        else:
            form.waiting.append(consumer)
        self._set_count(self._count + 1)

    def _drop(self, form: _Format[T], consumer: Consumer[T]) -> None:
        """Forget ``consumer`` (closed by itself, lagging or failed)."""
        if consumer in form.live:
            form.live.remove(consumer)
        elif consumer in form.waiting:
            form.waiting.remove(consumer)
        else:
            return
        if form is not self._raw and not form.consumers():
            self._forget(form)
        self._set_count(self._count - 1)

    def _forget(self, form: _Format[T]) -> None:
        """The format's muxer and muxed GOP go (no consumers, or the muxer failed)."""
        if self._formats.get(form.name) is form:
            del self._formats[form.name]
            self._muxed_bytes -= form.gop_bytes
            form.gop = []
            form.gop_bytes = 0

    def _fail(self, form: _Format[T], what: str) -> None:
        """A muxer raised: its consumers end with ``muxer_error``; the stream goes on."""
        self._muxer_errors += 1
        log.exception(
            "hub.muxer_error stream_id=%s format=%s what=%s", self.stream_id, form.name, what
        )
        for consumer in (*form.live, *form.waiting):
            consumer._end("muxer_error", drop=False)
            self._drop(form, consumer)
        if form is not self._raw:
            self._forget(form)

    def _check_gop(self) -> None:
        if (
            len(self._gop) <= self.gop_max_units
            and self._gop_bytes + self._muxed_bytes <= self.gop_max_bytes
        ):
            return
        # Rule 3: this GOP is too big to replay; joiners wait for the next keyframe.
        self._gop_overflows += 1
        self._gop = []
        self._gop_ok = False
        self._gop_bytes = self._muxed_bytes = 0
        forms: list[_Format[bytes] | _Format[AccessUnit]] = [self._raw, *self._formats.values()]
        for form in forms:
            form.gop = []
            form.gop_bytes = 0
            form.gop_ok = False

    def _account(self, unit: AccessUnit, size: int, now: float) -> None:
        self._units += 1
        self._bytes += size
        if unit.kind == "video":
            self._video_codec = unit.codec
            if unit.keyframe:
                self._keyframes += 1
                if self._first_key_at is None:
                    self._first_key_at = now
                picture = video_size(unit.codec, unit.data)
                if picture is not None:
                    self._size = picture
            dts = unit.dts if unit.dts is not None else unit.pts
            if dts is not None:
                if self._fps_t0 is None:
                    self._fps_t0 = dts
                    self._fps_n = 0
                else:
                    self._fps_n += 1
                    span = (dts - self._fps_t0) & _TS_MASK
                    if span >= _FPS_SPAN:
                        if span <= _FPS_MAX_SPAN:
                            self._fps = self._fps_n * 90000 / span
                        self._fps_t0 = dts
                        self._fps_n = 0
        else:
            self._audio_codec = unit.codec
        if self._rate_t0 is None:
            self._rate_t0 = now
            self._rate_bytes = 0
        self._rate_bytes += size
        elapsed = now - self._rate_t0
        if elapsed >= _RATE_WINDOW:
            self._rate = self._rate_bytes * 8 / elapsed
            self._rate_t0 = now
            self._rate_bytes = 0

    def _set_count(self, count: int) -> None:
        if count == self._count:
            return
        self._count = count
        if self._on_consumers is not None:
            self._on_consumers(count)


def _identity(unit: AccessUnit) -> AccessUnit:
    return unit


def _unit_size(unit: AccessUnit) -> int:
    return len(unit.data)

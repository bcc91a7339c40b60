"""Write-behind for the store, so that a keepalive never waits on disk.

Theory of operation:
- ``touch(device_id, at)`` records a last-seen time in a dict, newest time wins. One entry per
  device: its size is bounded by the number of devices, so it needs no other cap, and it never
  blocks or refuses (last-seen times are always coalesced, whatever the job queue does).
- ``submit(job)`` queues any other write: an ``AuditEntry``, an ``AvailabilityEvent``, or a
  callable ``async (store) -> None``. The queue holds at most ``max_jobs`` (10,000).
  **Overflow policy:** when it is full, ``submit`` counts the overflow (``overflows``), logs a
  warning (once per flush), wakes the flusher, and waits for space: backpressure on the
  submitter, never a dropped job. ``submit_nowait`` is for callers that cannot wait: it
  returns False instead (counted too) and the caller decides.
- One flusher task, owned by whoever calls ``start()`` and ended by ``close()``, writes all
  that is pending every ``flush_interval`` seconds, or at once when ``flush_threshold`` (1,000)
  items are pending. Consecutive audit entries (availability events) are written as one
  batch; callables run one by one, in submission order.
- A failed write is logged with its traceback and counted (``failures``); last-seen times go
  back into the dict for the next flush (unless a newer time arrived; not once closing), other
  jobs of the failed batch are dropped, so one poison job cannot wedge the queue.
- ``flush()`` returns once everything pending when it was called is written. ``close()``
  refuses new work (``touch``/``submit`` raise RuntimeError), flushes everything, including the
  jobs of submitters already waiting for space, and stops the task.
- A crash loses at most one flush interval of last-seen times and queued jobs. Devices are
  never written here: ``Store.upsert_device`` writes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from gateway.store.records import AuditEntry, AvailabilityEvent
from gateway.store.store import Store

__all__ = ["Job", "WriteBehind"]

_log = logging.getLogger(__name__)

Job = AuditEntry | AvailabilityEvent | Callable[[Store], Awaitable[None]]

DEFAULT_MAX_JOBS = 10_000
DEFAULT_FLUSH_THRESHOLD = 1_000


class WriteBehind:
    """Batches ``last_seen`` updates and other writes to ``store``; times in seconds."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 1.0,
        max_jobs: int = DEFAULT_MAX_JOBS,
        flush_threshold: int = DEFAULT_FLUSH_THRESHOLD,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        """``on_flush(n)`` is called after each flush that wrote ``n`` items (e.g. a metric)."""
        if flush_interval <= 0 or max_jobs < 1 or flush_threshold < 1:
            raise ValueError("need flush_interval > 0, max_jobs >= 1, flush_threshold >= 1")
        self._store = store
        self._interval = flush_interval
        self._max_jobs = max_jobs
        self._threshold = flush_threshold
        self._on_flush = on_flush
        self._last_seen: dict[str, datetime] = {}
        self._jobs: deque[Job] = deque()
        self._space = asyncio.Condition()  # notified whenever a flush takes jobs out
        self._blocked = 0  # submitters waiting for space
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._overflow_logged = False
        self.overflows = 0
        """Times a job found the queue full."""
        self.failures = 0
        """Items (last-seen times or jobs) whose write raised."""
        self.flushes = 0
        """Flushes that wrote something."""

    @property
    def pending(self) -> int:
        """Last-seen times plus jobs not yet written."""
        return len(self._last_seen) + len(self._jobs)

    async def start(self) -> None:
        """Start the flusher task; the caller owns it and ends it with ``close()``."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="gbgw-writebehind")

    async def __aenter__(self) -> WriteBehind:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def touch(self, device_id: str, at: datetime) -> None:
        """Record that ``device_id`` was seen at ``at`` (aware datetime); never blocks."""
        self._check_open()
        self._keep_newest(device_id, at)
        if self.pending >= self._threshold:
            self._wake.set()

    def submit_nowait(self, job: Job) -> bool:
        """Queue ``job`` if there is room now; False (and counted) when the queue is full."""
        self._check_open()
        if len(self._jobs) >= self._max_jobs or self._blocked:
            self._overflow()
            return False
        self._append(job)
        return True

    async def submit(self, job: Job) -> None:
        """Queue ``job``; when the queue is full, wait for the next flush to make room."""
        self._check_open()
        if len(self._jobs) < self._max_jobs and not self._blocked:
            self._append(job)
            return
        self._overflow()
        async with self._space:
            self._blocked += 1
            try:
                await self._space.wait_for(lambda: len(self._jobs) < self._max_jobs)
            finally:
                self._blocked -= 1
            self._append(job)

    async def flush(self) -> None:
        """Write everything pending now and return when it is written (or has failed)."""
        await self._flush_once()

    async def close(self) -> None:
        """Refuse new work, write everything pending, stop the flusher task."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
            while True:
                await self._flush_once()
                if not self._blocked and not self.pending:
                    break
                # Submitters woken by that flush enqueue as soon as we yield; no timed wait.
                await asyncio.sleep(0)
        finally:
            self._task = None
            self._closed.set()

    # --- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("write-behind is closed")

    def _keep_newest(self, device_id: str, at: datetime) -> None:
        current = self._last_seen.get(device_id)
        if current is None or at > current:
            self._last_seen[device_id] = at

    def _append(self, job: Job) -> None:
        self._jobs.append(job)
        # A full queue wakes the flusher too: submitters may be waiting for room.
        if self.pending >= self._threshold or len(self._jobs) >= self._max_jobs:
            self._wake.set()

    def _overflow(self) -> None:
        self.overflows += 1
        self._wake.set()
        if not self._overflow_logged:
            self._overflow_logged = True
            _log.warning("event=store.writebehind.full max_jobs=%d", self._max_jobs)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_once()
            except Exception:  # a bug, not a database error: keep the flusher alive
                _log.exception("event=store.writebehind.crash")

    async def _flush_once(self) -> None:
        async with self._flush_lock:
            seen, self._last_seen = self._last_seen, {}
            jobs = list(self._jobs)
            self._jobs.clear()
            self._overflow_logged = False
            if jobs:
                async with self._space:
                    self._space.notify_all()
            if not seen and not jobs:
                return
            self.flushes += 1
            if seen:
                try:
                    await self._store.touch_last_seen(seen)
                except Exception:
                    self.failures += len(seen)
                    _log.exception("event=store.writebehind.failed what=last_seen n=%d", len(seen))
                    if not self._closing:  # at close, retrying could loop forever
                        for device_id, at in seen.items():
                            self._keep_newest(device_id, at)
            await self._write_jobs(jobs)
            if self._on_flush is not None:
                self._on_flush(len(seen) + len(jobs))

    async def _write_jobs(self, jobs: Sequence[Job]) -> None:
        i = 0
        while i < len(jobs):
            job, end = jobs[i], i + 1
            if isinstance(job, AuditEntry | AvailabilityEvent):
                while end < len(jobs) and type(jobs[end]) is type(job):
                    end += 1
            try:
                if isinstance(job, AuditEntry):
                    await self._store.append_audit(
                        [j for j in jobs[i:end] if isinstance(j, AuditEntry)]
                    )
                elif isinstance(job, AvailabilityEvent):
                    await self._store.append_availability(
                        [j for j in jobs[i:end] if isinstance(j, AvailabilityEvent)]
                    )
                else:
                    await job(self._store)
            except Exception:
                self.failures += end - i
                _log.exception("event=store.writebehind.failed what=jobs n=%d", end - i)
            i = end

"""Device persistence for the registrar: group commit for new devices, write-behind for the rest.

A REGISTER from a new (or moved) device waits for its row to be on disk before the 200 OK goes
out, so an acknowledged device is never lost; saves arriving together share one transaction
(group commit), which is what lets a 12,000-device registration storm through at wire speed.
Last-seen times go through the store's write-behind batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from gateway.registrar import Device
from gateway.store import DeviceRecord, Store, WriteBehind

__all__ = ["StoreDeviceSink", "device_from_record", "record_from_device"]

log = logging.getLogger("gbgw.devices")

MAX_BATCH = 1000  # rows per group-commit transaction
MAX_QUEUED = 50_000  # saves waiting; past it save() waits for room (backpressure)


def record_from_device(d: Device) -> DeviceRecord:
    """The store row of a device."""
    return DeviceRecord(
        device_id=d.device_id,
        name=d.name or None,
        password=d.password,
        transport=d.transport,
        address=d.host or None,
        port=d.port or None,
        registered_at=d.registered_at,
        last_seen=d.last_seen,
        expires_at=d.expires_at,
        manufacturer=d.manufacturer or None,
        model=d.model or None,
        firmware=d.firmware or None,
        charset=d.charset or None,
    )


def device_from_record(r: DeviceRecord) -> Device:
    """A registrar device from a store row (offline until it speaks)."""
    return Device(
        device_id=r.device_id,
        transport=r.transport or "udp",
        host=r.address or "",
        port=r.port or 0,
        online=False,
        registered_at=r.registered_at,
        last_seen=r.last_seen,
        expires_at=r.expires_at,
        name=r.name or "",
        manufacturer=r.manufacturer or "",
        model=r.model or "",
        firmware=r.firmware or "",
        password=r.password,
        charset=r.charset or "",
    )


class StoreDeviceSink:
    """``DeviceSink`` over the store."""

    def __init__(self, store: Store, write_behind: WriteBehind) -> None:
        self.store = store
        self.write_behind = write_behind
        self._queue: asyncio.Queue[tuple[DeviceRecord, asyncio.Future[None]]] = asyncio.Queue(
            MAX_QUEUED
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the group-commit task."""
        self._task = asyncio.create_task(self._run(), name="device-group-commit")

    async def load(self) -> list[Device]:
        """Every stored device."""
        return [device_from_record(r) for r in await self.store.load_devices()]

    async def save(self, device: Device) -> None:
        """Write ``device`` durably; returns once its transaction has committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record_from_device(device), fut))
        await fut

    def touch(self, device_id: str, last_seen: datetime) -> None:
        """Record a last-seen time write-behind."""
        self.write_behind.touch(device_id, last_seen)

    async def delete(self, device_id: str) -> None:
        """Forget a device and its channels."""
        await self.store.delete_device(device_id)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[DeviceRecord, asyncio.Future[None]]]) -> None:
        # later saves of one device in a batch win
        latest = {rec.device_id: rec for rec, _ in batch}
        try:
            await self.store.upsert_devices(list(latest.values()))
        except Exception as exc:
            log.exception("store.device_commit_failed rows=%d", len(latest))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        pending: list[tuple[DeviceRecord, asyncio.Future[None]]] = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        if pending:
            await self._commit(pending)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

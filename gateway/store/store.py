"""The durable store: devices, channels, audit and availability history (SQLAlchemy Core, async).

Rules:
- ``open()`` brings the schema to the packaged head revision before anything else runs.
- Each public method is one transaction: it happens whole or not at all.
- SQLite (one process, one file): all work goes through a single connection, serialised by an
  asyncio lock, so the process never fights itself for the write lock (no SQLITE_BUSY), WAL
  keeps outside readers unblocked, and every transaction starts with an explicit BEGIN so
  DDL and ``replace_channels`` are atomic (pysqlite would otherwise autocommit them).
- PostgreSQL (several nodes): a connection pool; migrations take an advisory lock so two
  nodes starting together do not both upgrade.
Hot paths do not call this directly: ``WriteBehind`` batches ``last_seen`` and audit writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, Table, bindparam, delete, event, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from gateway.store import schema
from gateway.store.migrate import upgrade_head
from gateway.store.records import AuditEntry, AvailabilityEvent, ChannelRecord, DeviceRecord

__all__ = ["Store"]

CHUNK_ROWS = 1_000
"""Rows per INSERT batch or read partition: bounds memory and how long one batch's parameter
or row processing holds the event loop (100,000-channel catalogs)."""
MAX_QUERY_ROWS = 10_000
"""Largest page ``query_audit``/``query_availability`` return."""
_MIGRATION_LOCK_KEY = 28181_0001
"""PostgreSQL advisory lock held while migrating (any constant shared by all nodes)."""

_DEVICE_COLUMNS = tuple(c.name for c in schema.devices.columns)
_CHANNEL_COLUMNS = tuple(c.name for c in schema.channels.columns)


def _row(record: object, columns: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in columns}


def _device(row: Row[Any]) -> DeviceRecord:
    values = dict(zip(_DEVICE_COLUMNS, row, strict=True))
    values["extra"] = values["extra"] or {}
    return DeviceRecord(**values)


def _channel(row: Row[Any]) -> ChannelRecord:
    # Hot at startup (100,000s of rows): zip the plain tuple rather than go through _mapping.
    values = dict(zip(_CHANNEL_COLUMNS, row, strict=True))
    values["extra"] = values["extra"] or {}
    values["secrecy"] = bool(values["secrecy"])
    return ChannelRecord(**values)


def _chunks(items: Sequence[Any], size: int = CHUNK_ROWS) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite only BEGINs before DML; take transaction control (BEGIN in _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")  # ms, for other processes (CLI tools)
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


class Store:
    """Durable gbgw state behind an async SQLAlchemy engine; ``url`` uses an asyncio driver
    (``sqlite+aiosqlite:///PATH`` or ``postgresql+asyncpg://...``)."""

    def __init__(self, url: str, *, data_dir: Path | None = None, echo: bool = False) -> None:
        self._url = make_url(url)
        self._data_dir = data_dir
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._sqlite_lock = asyncio.Lock()

    @property
    def dialect(self) -> str:
        """Backend name: ``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Create ``data_dir`` (and an SQLite file's directory), connect, ``upgrade head``."""
        if self._engine is not None:
            return
        if self._data_dir is not None:
            self._data_dir.expanduser().mkdir(parents=True, exist_ok=True)
        if self._is_sqlite:
            database = self._url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                self._url,
                echo=self._echo,
                poolclass=AsyncAdaptedQueuePool,
                pool_size=1,
                max_overflow=0,
            )
            event.listen(engine.sync_engine, "connect", _sqlite_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        else:
            engine = create_async_engine(self._url, echo=self._echo, pool_pre_ping=True)
        self._engine = engine
        try:
            async with self._begin() as conn:
                if conn.dialect.name == "postgresql":
                    lock = text("SELECT pg_advisory_xact_lock(:key)")
                    await conn.execute(lock, {"key": _MIGRATION_LOCK_KEY})
                await conn.run_sync(upgrade_head)
        except BaseException:
            self._engine = None
            await engine.dispose()
            raise

    async def close(self) -> None:
        """Release every connection; the store can be opened again."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        if self._engine is None:
            raise RuntimeError("store is not open")
        lock = self._sqlite_lock if self._is_sqlite else contextlib.nullcontext()
        async with lock, self._engine.begin() as conn:
            yield conn

    def _upsert(self, table: Table, key: Sequence[str]) -> Any:
        """INSERT ... ON CONFLICT (key) DO UPDATE every other column (dialect-specific SQL)."""
        insert = sqlite.insert if self._is_sqlite else postgresql.insert
        stmt = insert(table)
        changes = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
        return stmt.on_conflict_do_update(index_elements=list(key), set_=changes)

    # --- devices ------------------------------------------------------------------------

    async def load_devices(self) -> list[DeviceRecord]:
        """Every known device, ordered by ``device_id``."""
        async with self._begin() as conn:
            result = await conn.execute(select(schema.devices).order_by(schema.devices.c.device_id))
            return [_device(row) for row in result]

    async def upsert_device(self, record: DeviceRecord) -> None:
        """Insert or replace a device row whole (carry ``password`` over from ``load_devices``)."""
        await self.upsert_devices([record])

    async def upsert_devices(self, records: Sequence[DeviceRecord]) -> None:
        """``upsert_device`` for many devices in one transaction (group commit); last copy wins."""
        rows = list({r.device_id: _row(r, _DEVICE_COLUMNS) for r in records}.values())
        if not rows:
            return
        stmt = self._upsert(schema.devices, ["device_id"])
        async with self._begin() as conn:
            for chunk in _chunks(rows):
                await conn.execute(stmt, chunk)

    async def delete_device(self, device_id: str) -> None:
        """Forget a device and its channels; history (audit, availability) stays."""
        async with self._begin() as conn:
            ch, dev = schema.channels, schema.devices
            await conn.execute(delete(ch).where(ch.c.device_id == device_id))
            await conn.execute(delete(dev).where(dev.c.device_id == device_id))

    async def touch_last_seen(self, batch: Mapping[str, datetime]) -> None:
        """Set ``last_seen`` of many devices in one batched UPDATE; unknown IDs are skipped."""
        if not batch:
            return
        dev = schema.devices
        stmt = (
            update(dev)
            .where(dev.c.device_id == bindparam("b_device_id"))
            .values(last_seen=bindparam("b_last_seen", type_=schema.UtcDateTime()))
        )
        params = [{"b_device_id": k, "b_last_seen": v} for k, v in batch.items()]
        async with self._begin() as conn:
            await conn.execute(stmt, params)

    # --- channels -----------------------------------------------------------------------

    @staticmethod
    def _channel_rows(device_id: str, channels: Iterable[ChannelRecord]) -> list[dict[str, Any]]:
        # Devices repeat items across catalog fragments: the last copy of an ID wins.
        rows: dict[str, dict[str, Any]] = {}
        for channel in channels:
            if channel.device_id != device_id:
                raise ValueError(
                    f"channel {channel.channel_id} belongs to {channel.device_id}, not {device_id}"
                )
            rows[channel.channel_id] = _row(channel, _CHANNEL_COLUMNS)
        return list(rows.values())

    async def replace_channels(self, device_id: str, channels: Sequence[ChannelRecord]) -> None:
        """Make ``channels`` the device's whole catalog, atomically (old rows go)."""
        rows = self._channel_rows(device_id, channels)
        ch = schema.channels
        async with self._begin() as conn:
            await conn.execute(delete(ch).where(ch.c.device_id == device_id))
            for chunk in _chunks(rows):
                await conn.execute(ch.insert(), chunk)

    async def merge_channels(self, device_id: str, channels: Sequence[ChannelRecord]) -> None:
        """Insert or update ``channels``; the device's other channels stay."""
        rows = self._channel_rows(device_id, channels)
        if not rows:
            return
        async with self._begin() as conn:
            stmt = self._upsert(schema.channels, ["device_id", "channel_id"])
            for chunk in _chunks(rows):
                await conn.execute(stmt, chunk)

    async def delete_channels(self, device_id: str, channel_ids: Iterable[str]) -> None:
        """Remove some channels of a device; unknown IDs are ignored."""
        ids = sorted(set(channel_ids))
        ch = schema.channels
        async with self._begin() as conn:
            for chunk in _chunks(ids, 500):  # keep IN (...) under every bind-parameter limit
                await conn.execute(
                    delete(ch).where(ch.c.device_id == device_id, ch.c.channel_id.in_(chunk))
                )

    async def load_channels(self, device_id: str | None = None) -> list[ChannelRecord]:
        """Channels of one device, or of all devices; ordered by device then channel ID."""
        ch = schema.channels
        stmt = select(ch).order_by(ch.c.device_id, ch.c.channel_id)
        if device_id is not None:
            stmt = stmt.where(ch.c.device_id == device_id)
        out: list[ChannelRecord] = []
        async with self._begin() as conn:
            result = await conn.stream(stmt)
            async for partition in result.partitions(CHUNK_ROWS):
                out.extend(_channel(row) for row in partition)
        return out

    # --- history ------------------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries (their ``id`` is ignored; the database numbers them)."""
        columns = [c.name for c in schema.audit.columns if c.name != "id"]
        rows = [_row(entry, columns) for entry in entries]
        async with self._begin() as conn:
            for chunk in _chunks(rows):
                await conn.execute(schema.audit.insert(), chunk)

    async def query_audit(
        self,
        limit: int = 100,
        offset: int = 0,
        consumer: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Audit entries newest first, optionally of one consumer and at or after ``since``."""
        _check_page(limit, offset)
        au = schema.audit
        stmt = select(au).order_by(au.c.id.desc()).limit(limit).offset(offset)
        if consumer is not None:
            stmt = stmt.where(au.c.consumer == consumer)
        if since is not None:
            stmt = stmt.where(au.c.at >= since)
        async with self._begin() as conn:
            return [AuditEntry(**row._mapping) for row in await conn.execute(stmt)]

    async def append_availability(self, events: Sequence[AvailabilityEvent]) -> None:
        """Append online/offline transitions (their ``id`` is ignored)."""
        columns = [c.name for c in schema.availability.columns if c.name != "id"]
        rows = [_row(ev, columns) for ev in events]
        async with self._begin() as conn:
            for chunk in _chunks(rows):
                await conn.execute(schema.availability.insert(), chunk)

    async def query_availability(
        self,
        subject_id: str | None = None,
        since: datetime | None = None,
        limit: int = MAX_QUERY_ROWS,
        offset: int = 0,
    ) -> list[AvailabilityEvent]:
        """Transitions oldest first, optionally of one subject and at or after ``since``."""
        _check_page(limit, offset)
        av = schema.availability
        stmt = select(av).order_by(av.c.at, av.c.id).limit(limit).offset(offset)
        if subject_id is not None:
            stmt = stmt.where(av.c.subject_id == subject_id)
        if since is not None:
            stmt = stmt.where(av.c.at >= since)
        async with self._begin() as conn:
            return [AvailabilityEvent(**row._mapping) for row in await conn.execute(stmt)]


def _check_page(limit: int, offset: int) -> None:
    if not 0 <= limit <= MAX_QUERY_ROWS or offset < 0:
        raise ValueError(f"need 0 <= limit <= {MAX_QUERY_ROWS} and offset >= 0")

"""gateway.store: migrations, devices, channels, history and write-behind on real SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store import (
    AuditEntry,
    AvailabilityEvent,
    ChannelRecord,
    DeviceRecord,
    Store,
    WriteBehind,
)
from gateway.store.migrate import current_revision, head_revision
from gateway.store.schema import metadata

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
DEV = "62090000001320000001"
NVR = "62090000001180000001"


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def channel(n: int, device_id: str = DEV, **kw: object) -> ChannelRecord:
    return ChannelRecord(device_id, f"6209000000131{n:07d}", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(url_of(tmp_path / "new-dir" / "gbgw.db"))
    await s.open()
    yield s
    await s.close()


async def run_sync_on(path: Path, fn: object) -> object:
    engine = create_async_engine(url_of(path))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


# --- migrations ---------------------------------------------------------------------------


async def test_open_creates_the_directory_and_migrates_to_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on the cwd (no alembic.ini lookup)
    db = tmp_path / "a" / "b" / "gbgw.db"
    async with Store(url_of(db)) as s:
        assert s.dialect == "sqlite"
    assert head_revision() == "0001"
    assert await run_sync_on(db, current_revision) == "0001"
    tables = await run_sync_on(db, lambda c: set(inspect(c).get_table_names()))
    assert tables == {"alembic_version", "devices", "channels", "audit", "availability"}


async def test_sqlite_runs_in_wal_mode(store: Store, tmp_path: Path) -> None:
    def pragmas(conn: Connection) -> tuple[object, ...]:
        return tuple(conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode",))

    assert await run_sync_on(tmp_path / "new-dir" / "gbgw.db", pragmas) == ("wal",)
    # synchronous and foreign_keys are per connection: ask the store's own.
    async with store._begin() as conn:
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


async def test_migrations_match_the_schema(store: Store, tmp_path: Path) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    assert await run_sync_on(tmp_path / "new-dir" / "gbgw.db", diff) == []


async def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "gbgw.db"
    s = Store(url_of(db))
    await s.open()
    await s.open()  # already open: no-op
    await s.upsert_device(DeviceRecord(DEV, name="cam", registered_at=T0))
    await s.close()
    await s.close()
    for _ in range(2):
        async with Store(url_of(db)) as again:
            assert [d.name for d in await again.load_devices()] == ["cam"]
    assert await run_sync_on(db, current_revision) == "0001"


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = Store(url_of(tmp_path / "gbgw.db"))
    with pytest.raises(RuntimeError, match="not open"):
        await s.load_devices()


async def test_data_dir_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with Store(url_of(tmp_path / "gbgw.db"), data_dir=data_dir):
        assert data_dir.is_dir()


# --- devices ------------------------------------------------------------------------------


async def test_devices_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "gbgw.db"
    plus8 = timezone(timedelta(hours=8))
    device = DeviceRecord(
        DEV,
        name="门口",
        password="secret",
        transport="tcp",
        address="10.0.0.7",
        port=5060,
        registered_at=T0.astimezone(plus8),
        last_seen=T0,
        expires_at=T0 + timedelta(hours=1),
        manufacturer="Hikvision",
        model="DS-2CD",
        firmware="V5.5",
        charset="GB2312",
        extra={"x": [1, "two", None], "ok": True},
    )
    async with Store(url_of(db)) as s:
        await s.upsert_device(device)
        await s.upsert_device(DeviceRecord(NVR))
    async with Store(url_of(db)) as s:
        loaded = await s.load_devices()
    assert loaded == [DeviceRecord(NVR), device]  # ordered by device_id
    assert loaded[1].registered_at is not None
    assert loaded[1].registered_at.tzinfo == UTC
    assert loaded[1].registered_at == T0
    assert "secret" not in repr(loaded[1])


async def test_upsert_replaces_the_row(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV, name="old", password="p"))
    await store.upsert_devices([DeviceRecord(DEV, name="mid"), DeviceRecord(DEV, name="new")])
    assert await store.load_devices() == [DeviceRecord(DEV, name="new")]


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DeviceRecord(DEV, last_seen=datetime(2026, 1, 1))
    with pytest.raises(StatementError, match="naive datetime"):
        await store.touch_last_seen({DEV: datetime(2026, 1, 1)})


async def test_touch_last_seen_in_one_batch(store: Store) -> None:
    await store.upsert_devices([DeviceRecord(DEV), DeviceRecord(NVR)])
    later = T0 + timedelta(seconds=60)
    await store.touch_last_seen({DEV: T0, NVR: later, "62090000001320009999": T0})
    seen = {d.device_id: d.last_seen for d in await store.load_devices()}
    assert seen == {DEV: T0, NVR: later}


async def test_delete_device_takes_its_channels(store: Store) -> None:
    await store.upsert_devices([DeviceRecord(DEV), DeviceRecord(NVR)])
    await store.replace_channels(DEV, [channel(1), channel(2)])
    await store.replace_channels(NVR, [channel(3, NVR)])
    await store.delete_device(DEV)
    assert [d.device_id for d in await store.load_devices()] == [NVR]
    assert [c.device_id for c in await store.load_channels()] == [NVR]


# --- channels -----------------------------------------------------------------------------


async def test_replace_channels_with_100000_rows(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    big = [channel(n, name=f"c{n}", civil_code="620902", updated_at=T0) for n in range(100_000)]
    await store.replace_channels(DEV, big)
    loaded = await store.load_channels(DEV)
    assert len(loaded) == 100_000
    assert loaded[0] == big[0]
    assert loaded[-1] == big[-1]
    await store.replace_channels(DEV, big[:3])
    assert await store.load_channels(DEV) == big[:3]


async def test_replace_channels_is_atomic(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    await store.replace_channels(DEV, [channel(1, name="kept")])
    # The last row cannot be encoded: the delete and the earlier chunks must roll back.
    rows = [channel(n) for n in range(20_000)]
    rows.append(channel(99_999, extra={"bad": object()}))
    with pytest.raises(StatementError):
        await store.replace_channels(DEV, rows)
    assert await store.load_channels(DEV) == [channel(1, name="kept")]


async def test_channel_fields_round_trip(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    full = ChannelRecord(
        DEV,
        "62090200001310000001",
        name="北门",
        civil_code="620902",
        parent_id="620902",
        business_group_id="62090000002150000001",
        kind="camera",
        status="ON",
        manufacturer="Dahua",
        model="IPC",
        owner="police",
        address="Main St",
        ip_address="10.0.0.9",
        port=8000,
        longitude=94.66,
        latitude=40.14,
        ptz_type=1,
        secrecy=True,
        resolution="6/4",
        updated_at=T0,
        extra={"block": "A"},
    )
    region = ChannelRecord(DEV, "620902", name="region")
    await store.replace_channels(DEV, [full, region])
    assert await store.load_channels(DEV) == [region, full]


async def test_replace_keeps_the_last_copy_of_a_repeated_id(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    await store.replace_channels(DEV, [channel(1, name="a"), channel(1, name="b")])
    assert await store.load_channels(DEV) == [channel(1, name="b")]


async def test_channels_must_belong_to_the_device(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    with pytest.raises(ValueError, match="belongs to"):
        await store.replace_channels(DEV, [channel(1, NVR)])
    with pytest.raises(IntegrityError):  # NVR is not a known device
        await store.replace_channels(NVR, [channel(1, NVR)])


async def test_merge_and_delete_channels(store: Store) -> None:
    await store.upsert_devices([DeviceRecord(DEV), DeviceRecord(NVR)])
    await store.replace_channels(DEV, [channel(1, name="one"), channel(2, name="two")])
    await store.replace_channels(NVR, [channel(1, NVR)])
    await store.merge_channels(DEV, [channel(2, name="TWO"), channel(3, name="three")])
    assert [c.name for c in await store.load_channels(DEV)] == ["one", "TWO", "three"]
    await store.delete_channels(DEV, [channel(1).channel_id, channel(3).channel_id, "nope"])
    assert await store.load_channels(DEV) == [channel(2, name="TWO")]
    assert len(await store.load_channels()) == 2  # NVR's channel untouched
    await store.merge_channels(DEV, [])


# --- history ------------------------------------------------------------------------------


async def test_audit_round_trip(store: Store) -> None:
    entries = [
        AuditEntry(
            T0 + timedelta(seconds=i),
            "ops" if i % 2 else "sip",
            "live.open",
            target=f"ch{i}",
            peer="10.0.0.1:5000",
            result="ok",
            detail=f"d{i}",
        )
        for i in range(6)
    ]
    await store.append_audit(entries)
    newest = await store.query_audit(limit=2)
    assert [(e.target, e.id) for e in newest] == [("ch5", 6), ("ch4", 5)]
    assert newest[0] == dataclasses.replace(entries[5], id=6)
    assert [e.target for e in await store.query_audit(limit=2, offset=2)] == ["ch3", "ch2"]
    assert [e.target for e in await store.query_audit(consumer="ops")] == ["ch5", "ch3", "ch1"]
    since = T0 + timedelta(seconds=4)
    assert [e.target for e in await store.query_audit(since=since)] == ["ch5", "ch4"]
    with pytest.raises(ValueError):
        await store.query_audit(limit=-1)


async def test_availability_round_trip(store: Store) -> None:
    events = [
        AvailabilityEvent(T0, DEV, "device", True),
        AvailabilityEvent(T0 + timedelta(seconds=5), DEV, "device", False),
        AvailabilityEvent(T0 + timedelta(seconds=1), "62090000001310000001", "channel", True),
    ]
    await store.append_availability(events)
    loaded = await store.query_availability()
    assert [(e.subject_id, e.online, e.at) for e in loaded] == [
        (DEV, True, T0),
        ("62090000001310000001", True, T0 + timedelta(seconds=1)),
        (DEV, False, T0 + timedelta(seconds=5)),
    ]
    assert [e.online for e in await store.query_availability(subject_id=DEV)] == [True, False]
    with pytest.raises(ValueError, match="kind"):
        AvailabilityEvent(T0, DEV, "camera", True)  # type: ignore[arg-type]


# --- write-behind -------------------------------------------------------------------------


async def test_writebehind_coalesces_and_flushes_on_close(store: Store) -> None:
    await store.upsert_devices([DeviceRecord(DEV), DeviceRecord(NVR)])
    wb = WriteBehind(store, flush_interval=3600)
    await wb.start()
    for i in range(100):
        wb.touch(DEV, T0 + timedelta(seconds=i))
    wb.touch(DEV, T0)  # an older time never wins
    wb.touch(NVR, T0)
    assert wb.pending == 2
    await wb.submit(AuditEntry(T0, "sip", "register", target=DEV))
    await wb.submit(AuditEntry(T0, "sip", "register", target=NVR))
    assert wb.submit_nowait(AvailabilityEvent(T0, DEV, "device", True))
    await wb.close()
    assert wb.pending == 0
    assert wb.flushes == 1
    seen = {d.device_id: d.last_seen for d in await store.load_devices()}
    assert seen == {DEV: T0 + timedelta(seconds=99), NVR: T0}
    assert [e.target for e in await store.query_audit()] == [NVR, DEV]
    assert len(await store.query_availability()) == 1
    with pytest.raises(RuntimeError, match="closed"):
        wb.touch(DEV, T0)
    with pytest.raises(RuntimeError, match="closed"):
        await wb.submit(AuditEntry(T0, "sip", "register"))
    await wb.close()  # idempotent


async def test_writebehind_flush_writes_everything_pending(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    async with WriteBehind(store, flush_interval=3600) as wb:
        wb.touch(DEV, T0)

        async def rename(s: Store) -> None:
            await s.upsert_device(DeviceRecord(DEV, name="renamed", last_seen=T0))

        await wb.submit(rename)
        await wb.flush()
        assert wb.pending == 0
        assert await store.load_devices() == [DeviceRecord(DEV, name="renamed", last_seen=T0)]


async def test_writebehind_flushes_at_the_threshold(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))
    flushed = asyncio.Event()
    sizes: list[int] = []

    def on_flush(n: int) -> None:
        sizes.append(n)
        flushed.set()

    async with WriteBehind(store, flush_interval=3600, flush_threshold=10, on_flush=on_flush) as wb:
        for i in range(9):
            await wb.submit(AuditEntry(T0, "sip", "x", target=str(i)))
        wb.touch(DEV, T0)  # the 10th pending item wakes the flusher; no hour-long wait
        await asyncio.wait_for(flushed.wait(), 10)
    assert sizes == [10]
    assert len(await store.query_audit()) == 9


async def test_writebehind_backpressure_never_drops_jobs(store: Store) -> None:
    async with WriteBehind(store, flush_interval=3600, max_jobs=5) as wb:
        for i in range(5):
            assert wb.submit_nowait(AuditEntry(T0, "sip", "x", target=str(i)))
        assert not wb.submit_nowait(AuditEntry(T0, "sip", "x", target="refused"))
        # These wait for space; the full queue has already woken the flusher.
        await asyncio.gather(
            *(wb.submit(AuditEntry(T0, "sip", "x", target=f"w{i}")) for i in range(12))
        )
        assert wb.overflows >= 2
    targets = {e.target for e in await store.query_audit(limit=100)}
    assert targets == {str(i) for i in range(5)} | {f"w{i}" for i in range(12)}


async def test_writebehind_close_drains_blocked_submitters(store: Store) -> None:
    wb = WriteBehind(store, flush_interval=3600, max_jobs=2, flush_threshold=1000)
    for i in range(2):
        await wb.submit(AuditEntry(T0, "sip", "x", target=str(i)))
    # No flusher task started: these block until close() makes room.
    blocked = [
        asyncio.create_task(wb.submit(AuditEntry(T0, "sip", "x", target=f"b{i}"))) for i in range(5)
    ]
    await asyncio.sleep(0)  # let them reach the wait (a yield, not a timed wait)
    assert not any(t.done() for t in blocked)
    await wb.close()
    await asyncio.gather(*blocked)
    assert len(await store.query_audit(limit=100)) == 7


async def test_writebehind_survives_a_failing_job(store: Store) -> None:
    await store.upsert_device(DeviceRecord(DEV))

    async def broken(s: Store) -> None:
        raise OSError("disk on fire")

    async with WriteBehind(store, flush_interval=3600) as wb:
        await wb.submit(broken)
        await wb.submit(AuditEntry(T0, "sip", "after"))
        wb.touch(DEV, T0)
        await wb.flush()
        assert wb.failures == 1
    assert [e.action for e in await store.query_audit()] == ["after"]
    assert (await store.load_devices())[0].last_seen == T0


async def test_writebehind_retries_last_seen_and_close_ends_with_the_database_gone(
    tmp_path: Path,
) -> None:
    s = Store(url_of(tmp_path / "gbgw.db"))
    await s.open()
    await s.upsert_device(DeviceRecord(DEV))
    wb = WriteBehind(s, flush_interval=3600)
    wb.touch(DEV, T0)
    await s.close()  # every write now fails
    await wb.flush()
    assert (wb.failures, wb.pending) == (1, 1)  # kept for the next flush
    await wb.submit(AuditEntry(T0, "sip", "lost"))
    await wb.close()  # fails once more, logs, and returns instead of retrying forever
    assert (wb.failures, wb.pending) == (3, 0)

"""gateway.audit: entries written behind to a real SQLite store and read back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit import MAX_FIELD, AuditLog
from gateway.store import Store, WriteBehind
from gateway.zones import Consumer

T0 = datetime(2026, 5, 1, 2, 0, 0, tzinfo=UTC)
CAM = "62090200001310000001"
OPS = Consumer("ops", "token", frozenset({"police"}), frozenset({1}), ptz=True)
CITY = Consumer("city", "upstream", frozenset({"default"}), frozenset({3}))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'gbgw.db'}")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def wb(store: Store) -> AsyncIterator[WriteBehind]:
    # A long interval: only query()'s flush can make entries visible.
    w = WriteBehind(store, flush_interval=3600.0)
    await w.start()
    yield w
    await w.close()


async def test_record_then_query(store: Store, wb: WriteBehind) -> None:
    audit = AuditLog(wb, store, Clock())
    assert audit.record(OPS, "stream", CAM, "10.0.0.1:5000", detail="ts")
    [entry] = await audit.query()
    assert (entry.consumer, entry.action, entry.target, entry.peer) == (
        "ops",
        "stream",
        CAM,
        "10.0.0.1:5000",
    )
    assert (entry.result, entry.detail) == ("allowed", "ts")
    assert entry.at == T0 + timedelta(seconds=1)
    assert entry.id is not None


async def test_newest_first_and_filters(store: Store, wb: WriteBehind) -> None:
    audit = AuditLog(wb, store, Clock())
    audit.record(OPS, "stream", CAM, "10.0.0.1:1")
    audit.record(CITY, "stream", CAM, "10.0.0.9:5060")
    audit.record(OPS, "ptz", CAM, "10.0.0.1:2", detail="left 0x80")
    entries = await audit.query()
    assert [e.action for e in entries] == ["ptz", "stream", "stream"]
    assert [e.consumer for e in entries] == ["ops", "city", "ops"]
    assert [e.peer for e in await audit.query(consumer="ops")] == ["10.0.0.1:2", "10.0.0.1:1"]
    since = await audit.query(since=T0 + timedelta(seconds=2))
    assert [e.consumer for e in since] == ["ops", "city"]
    assert [e.action for e in await audit.query(limit=1, offset=1)] == ["stream"]


async def test_entries_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gbgw.db'}"
    async with Store(url) as store, WriteBehind(store, flush_interval=3600.0) as wb:
        AuditLog(wb, store, Clock()).record(OPS, "stream", CAM, "10.0.0.1:1")
    async with Store(url) as store:
        [entry] = await store.query_audit()
    assert entry.consumer == "ops"


async def test_fields_are_capped(store: Store, wb: WriteBehind) -> None:
    audit = AuditLog(wb, store, Clock())
    audit.record(OPS, "stream", "x" * 10_000, "p" * 10_000, detail="d" * 10_000)
    [entry] = await audit.query()
    assert len(entry.target) == len(entry.peer) == len(entry.detail) == MAX_FIELD


async def test_overflow_drops_counts_and_logs_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with WriteBehind(store, flush_interval=3600.0, max_jobs=2, flush_threshold=100) as wb:
        audit = AuditLog(wb, store, Clock())
        with caplog.at_level(logging.WARNING, logger="gbgw.audit"):
            results = [audit.record(OPS, "stream", CAM, "p") for _ in range(5)]
        assert results == [True, True, False, False, False]
        assert audit.dropped == 3
        assert [r.getMessage() for r in caplog.records if r.name == "gbgw.audit"] == [
            "audit.dropped consumer=ops action=stream"
        ]
        assert len(await audit.query()) == 2
        assert audit.record(OPS, "stream", CAM, "p")  # room again after the flush


async def test_record_after_close_is_dropped_not_raised(store: Store) -> None:
    wb = WriteBehind(store, flush_interval=3600.0)
    await wb.close()
    audit = AuditLog(wb, store, Clock())
    assert not audit.record(OPS, "stream", CAM, "p")
    assert audit.dropped == 1

"""The audit log: who opened which stream or moved which camera, when, from where.

Every allowed stream open and PTZ command (and any other action a caller wants kept) becomes an
``AuditEntry`` written behind (``WriteBehind.submit_nowait``), so a request never waits on disk.
**Overflow policy:** when the write-behind queue is full the entry is dropped, counted in
``dropped`` and logged once per run of drops; ``record`` never blocks. Fields are capped at
``MAX_FIELD`` characters (they may come from a URL or a SIP header). ``query`` flushes first,
so an entry recorded just before is visible (``GET /api/audit``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from gateway.store import AuditEntry, Store, WriteBehind
from gateway.zones import Consumer

__all__ = ["MAX_FIELD", "AuditLog"]

log = logging.getLogger("gbgw.audit")

MAX_FIELD = 256
"""Characters kept of ``target``, ``peer`` and ``detail``."""


class AuditLog:
    """Persisted audit trail on the store, written behind; ``clock`` gives aware UTC time."""

    def __init__(
        self, write_behind: WriteBehind, store: Store, clock: Callable[[], datetime]
    ) -> None:
        self._wb = write_behind
        self._store = store
        self._clock = clock
        self._dropping = False
        self.dropped = 0
        """Entries lost because the write-behind queue was full or closed."""

    def record(
        self,
        consumer: Consumer,
        action: str,
        target: str,
        peer: str,
        result: str = "allowed",
        detail: str = "",
    ) -> bool:
        """Queue one entry (``peer`` is ``host:port``); False when it had to be dropped."""
        entry = AuditEntry(
            at=self._clock(),
            consumer=consumer.name,
            action=action[:MAX_FIELD],
            target=target[:MAX_FIELD],
            peer=peer[:MAX_FIELD],
            result=result[:MAX_FIELD],
            detail=detail[:MAX_FIELD],
        )
        try:
            queued = self._wb.submit_nowait(entry)
        except RuntimeError:  # closed: shutting down
            queued = False
        if queued:
            self._dropping = False
            return True
        self.dropped += 1
        if not self._dropping:
            self._dropping = True
            log.warning("audit.dropped consumer=%s action=%s", consumer.name, action[:64])
        return False

    async def query(
        self,
        limit: int = 100,
        offset: int = 0,
        consumer: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Entries newest first, optionally of one consumer and at or after ``since``."""
        await self._wb.flush()
        return await self._store.query_audit(limit, offset, consumer, since)

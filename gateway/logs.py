"""Structured logging: structlog, one event per line, JSON when stdout is not a TTY.

Every stdlib logger (``sip/`` and ``media/`` use plain ``logging``) goes through the same
structlog formatter, so the whole process writes one format. Messages are fixed event names
(``register.ok``); fields follow. A stdlib message written as ``"event.name k=v k2=v2"`` is
split into the event name and its fields, so library modules stay free of structlog.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging"]


def _split_kv(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Turn ``"register.ok device_id=1 peer=a:1"`` into an event name plus fields."""
    event = event_dict.get("event")
    if isinstance(event, str) and " " in event and "=" in event:
        head, *rest = event.split(" ")
        if "=" not in head:
            fields: dict[str, str] = {}
            for part in rest:
                k, eq, v = part.partition("=")
                if not eq or not k.isidentifier():
                    return event_dict
                fields[k] = v
            event_dict["event"] = head
            for k, v in fields.items():
                event_dict.setdefault(k, v)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog and route stdlib logging through it, writing to stdout."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _split_kv,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_out
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:-1], _format_args, _split_kv],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aioice logs every ICE connectivity check at INFO
    for noisy in ("uvicorn.access", "uvicorn.error", "aiosqlite", "alembic", "aioice"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _format_args(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None and record.args:
        event_dict["event"] = record.getMessage()
    return event_dict

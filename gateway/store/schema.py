"""Tables of the gbgw store (SQLAlchemy Core), portable across SQLite and PostgreSQL.

``gateway/migrations/versions`` creates exactly these tables; a test compares the two. Change
both together: a new column here needs a new migration there.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

__all__ = ["UtcDateTime", "audit", "availability", "channels", "devices", "metadata"]


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out.

    PostgreSQL stores ``timestamptz``; SQLite has no time zone type, so UTC is stored naive
    (fixed-width text that sorts chronologically) and marked UTC again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store takes aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_AutoId = BigInteger().with_variant(Integer(), "sqlite")
_Json = JSON(none_as_null=True)

metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s"})

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(20), primary_key=True),
    Column("name", String),
    Column("password", String),
    Column("transport", String(8), nullable=False),
    Column("address", String),
    Column("port", Integer),
    Column("registered_at", UtcDateTime),
    Column("last_seen", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("manufacturer", String),
    Column("model", String),
    Column("firmware", String),
    Column("charset", String(32)),
    Column("extra", _Json),
)

channels = Table(
    "channels",
    metadata,
    Column(
        "device_id",
        String(20),
        ForeignKey("devices.device_id", ondelete="CASCADE", name="fk_channels_device_id"),
        primary_key=True,
    ),
    Column("channel_id", String(20), primary_key=True),
    Column("name", String),
    Column("civil_code", String),
    Column("parent_id", String),
    Column("business_group_id", String),
    Column("kind", String),
    Column("status", String),
    Column("manufacturer", String),
    Column("model", String),
    Column("owner", String),
    Column("address", String),
    Column("ip_address", String),
    Column("port", Integer),
    Column("longitude", Float),
    Column("latitude", Float),
    Column("ptz_type", Integer),
    Column("secrecy", Boolean, nullable=False),
    Column("resolution", String),
    Column("updated_at", UtcDateTime),
    Column("extra", _Json),
    Index("ix_channels_civil_code", "civil_code"),
    Index("ix_channels_channel_id", "channel_id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", _AutoId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("consumer", String, nullable=False),
    Column("action", String, nullable=False),
    Column("target", String, nullable=False),
    Column("peer", String, nullable=False),
    Column("result", String, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_at", "at"),
    Index("ix_audit_consumer_id", "consumer", "id"),
)

availability = Table(
    "availability",
    metadata,
    Column("id", _AutoId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("subject_id", String(20), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("online", Boolean, nullable=False),
    Index("ix_availability_at", "at"),
    Index("ix_availability_subject_id_at", "subject_id", "at"),
)

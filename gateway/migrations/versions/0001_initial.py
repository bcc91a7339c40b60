"""Initial schema: devices, channels, audit, availability.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written by hand and self-contained (no import of gateway.store.schema, which will move on):
portable types only, so the same script runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(20), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("password", sa.String(), nullable=True),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("registered_at", _TS, nullable=True),
        sa.Column("last_seen", _TS, nullable=True),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("manufacturer", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("firmware", sa.String(), nullable=True),
        sa.Column("charset", sa.String(32), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
    )
    op.create_table(
        "channels",
        sa.Column("device_id", sa.String(20), nullable=False),
        sa.Column("channel_id", sa.String(20), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("civil_code", sa.String(), nullable=True),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("business_group_id", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("manufacturer", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("ip_address", sa.String(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("ptz_type", sa.Integer(), nullable=True),
        sa.Column("secrecy", sa.Boolean(), nullable=False),
        sa.Column("resolution", sa.String(), nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "channel_id", name="pk_channels"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name="fk_channels_device_id",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_channels_civil_code", "channels", ["civil_code"])
    op.create_index("ix_channels_channel_id", "channels", ["channel_id"])
    op.create_table(
        "audit",
        sa.Column("id", _AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("consumer", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("peer", sa.String(), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_consumer_id", "audit", ["consumer", "id"])
    op.create_table(
        "availability",
        sa.Column("id", _AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("subject_id", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_availability"),
    )
    op.create_index("ix_availability_at", "availability", ["at"])
    op.create_index("ix_availability_subject_id_at", "availability", ["subject_id", "at"])


def downgrade() -> None:
    op.drop_table("availability")
    op.drop_table("audit")
    op.drop_table("channels")
    op.drop_table("devices")

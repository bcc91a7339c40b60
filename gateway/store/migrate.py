"""Run the packaged Alembic migrations on an open connection (``Store.open`` does this).

Alembic is configured in code: ``script_location`` is the ``gateway/migrations`` directory
shipped inside the package, so nothing depends on the cwd or on an ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "upgrade_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()  # no ini file on purpose
    # ConfigParser interpolates '%', so a path holding one must escape it.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_head(connection: Connection) -> None:
    """Upgrade the schema to the newest revision inside the caller's transaction (sync)."""
    command.upgrade(_config(connection), "head")


def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None = not migrated yet) (sync)."""
    return MigrationContext.configure(connection).get_current_revision()

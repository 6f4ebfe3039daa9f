"""Schema migrations (Alembic) as functions: the CLI, health and tests all use these."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from storage.engine import normalize_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK_ID = 0x626C6F6773746F72  # "blogstor": pg_advisory_lock key for migrations


def alembic_ini() -> Path:
    """alembic.ini beside the source tree, or in the working directory for installed wheels."""
    for candidate in (PROJECT_ROOT / "alembic.ini", Path.cwd() / "alembic.ini"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("alembic.ini not found: run blogstore from the project directory")


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(alembic_ini()))
    if url:
        # ConfigParser treats % as interpolation: escape it (passwords may contain it).
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty before the first migration)."""
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        return set()
    return set(connection.scalars(text("SELECT version_num FROM alembic_version")))

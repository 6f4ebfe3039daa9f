"""Schema migrations (Alembic) as functions: the CLI, health and tests all use these.

Expand/contract: a migration module may declare `compatible_since = "<revision>"`, the oldest
code revision that still runs correctly against the schema it leaves (a migration that only
adds a nullable column or a table declares its parent). `record_compatibility` (an Alembic
`on_version_apply` hook, see migrations/env.py) writes that declaration into the database, in
the migration's transaction, so that code older than the migration, which does not have its
file, can still read it. Without a declaration only code at exactly that revision is compatible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, MetaData, String, Table, delete, select, text
from sqlalchemy.dialects.postgresql import insert

from storage import rls
from storage.engine import normalize_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK_ID = 0x626C6F6773746F72  # "blogstor": pg_advisory_lock key for migrations
COMPATIBILITY_SINCE_REVISION = "0009"  # the migration that creates the table below

# Bookkeeping, like alembic_version: created by migration 0009, not a model (env.py leaves it
# out of autogenerate). One row per applied revision that declares its compatibility.
schema_compatibility = Table(
    "schema_compatibility",
    MetaData(),
    Column("revision", String(32), primary_key=True),
    Column("compatible_since", String(32), nullable=False),
)


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


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> set[str]:
    return set(script_directory().get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty before the first migration)."""
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        return set()
    return set(connection.scalars(text("SELECT version_num FROM alembic_version")))


def declared_compatible_since(script: ScriptDirectory, revision: str) -> str:
    return _declared(script.get_revision(revision))


def _declared(migration: Any) -> str:
    """What the migration module declares, or the revision itself (strict) if it is silent."""
    return getattr(migration.module, "compatible_since", None) or migration.revision


def check_declarations(script: ScriptDirectory) -> list[str]:
    """Problems with the migrations' `compatible_since` declarations (empty: all consistent).

    A declaration must name the migration itself or one of its ancestors, and may not reach
    further back than its parent's: code that the parent's schema broke stays broken.
    """
    problems = []
    for current in script.walk_revisions():
        declared = declared_compatible_since(script, current.revision)
        lineage = {r.revision for r in script.iterate_revisions(current.revision, "base")}
        if declared not in lineage:
            problems.append(f"{current.revision}: compatible_since {declared} is not an ancestor")
            continue
        if current.down_revision is None or not isinstance(current.down_revision, str):
            continue
        floor = declared_compatible_since(script, current.down_revision)
        if floor not in {r.revision for r in script.iterate_revisions(declared, "base")}:
            problems.append(
                f"{current.revision}: compatible_since {declared} is older than its parent's "
                f"{floor}"
            )
    return problems


def record_compatibility(*, ctx: Any, step: Any, **_: Any) -> None:
    """Alembic on_version_apply hook: keep schema_compatibility in step with the migrations.

    Runs after each step, inside its transaction, online and in offline (--sql) mode alike. The
    table exists for COMPATIBILITY_SINCE_REVISION and every descendant, which is decided from
    the revision map (no query, so offline mode works too).
    """
    if step.is_stamp or step.up_revision_id is None:
        return
    revision = step.up_revision_id
    lineage = {r.revision for r in step.revision_map.iterate_revisions(revision, "base")}
    if COMPATIBILITY_SINCE_REVISION not in lineage:
        return
    if not step.is_upgrade:
        if revision != COMPATIBILITY_SINCE_REVISION:  # that one's downgrade drops the table
            ctx.execute(
                delete(schema_compatibility).where(schema_compatibility.c.revision == revision)
            )
        return
    upsert = insert(schema_compatibility).values(
        revision=revision, compatible_since=_declared(step.up_revision)
    )
    ctx.execute(
        upsert.on_conflict_do_update(
            index_elements=[schema_compatibility.c.revision],
            set_={"compatible_since": upsert.excluded.compatible_since},
        )
    )


def database_compatible_since(connection: Connection, revision: str) -> str | None:
    """The oldest code revision the database says can run against `revision`, if it says."""
    if connection.scalar(text("SELECT to_regclass('schema_compatibility')")) is None:
        return None
    query = select(schema_compatibility.c.compatible_since).where(
        schema_compatibility.c.revision == revision
    )
    return connection.scalar(query)


@dataclass(frozen=True)
class SchemaVerdict:
    ready: bool
    reason: str  # one line for the log


class CodeSchema:
    """What this code knows about schemas: its head and every revision up to it."""

    def __init__(self, script: ScriptDirectory | None = None, *, role: str = rls.NO_ROLE) -> None:
        """`role`: the one the service switches to (BLOGSTORE_DB_ROLE), which must exist."""
        script = script or script_directory()
        self.role = role
        heads = script.get_heads()
        if len(heads) != 1:
            raise RuntimeError(f"migrations must have one head, found {sorted(heads)}")
        self.head: str = heads[0]
        self.known = {r.revision for r in script.iterate_revisions(self.head, "base")}

    def verdict(self, connection: Connection) -> SchemaVerdict:
        """Can this code run against the database's schema (expand/contract aware), and switch
        to its role?"""
        verdict = self._schema_verdict(connection)
        if verdict.ready and (problem := rls.role_problem(connection, self.role)):
            return SchemaVerdict(False, problem)
        return verdict

    def _schema_verdict(self, connection: Connection) -> SchemaVerdict:
        current = current_revisions(connection)
        if not current:
            return SchemaVerdict(False, "the database has no schema: run `blogstore migrate`")
        if len(current) != 1:
            return SchemaVerdict(False, f"the database has several heads {sorted(current)}")
        (revision,) = current
        if revision == self.head:
            return SchemaVerdict(True, f"schema at the code's head {self.head}")
        if revision in self.known:
            return SchemaVerdict(
                False,
                f"schema {revision} is behind the code's head {self.head}: run `blogstore migrate`",
            )
        since = database_compatible_since(connection, revision)
        if since is not None and since in self.known:
            return SchemaVerdict(
                True,
                f"schema {revision} is newer than the code's head {self.head} and declares "
                f"itself compatible with code since {since}",
            )
        needs = f"code at {since} or newer" if since else f"code at exactly {revision}"
        return SchemaVerdict(
            False,
            f"schema {revision} is ahead of the code's head {self.head} and not compatible "
            f"with it (it needs {needs}): finish the rollout, or downgrade the database",
        )

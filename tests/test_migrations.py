"""Migrations: reversible, one head, matching the models, safe to run from two places at once."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from storage import migrate
from storage.engine import normalize_url
from tests import support


def tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_one_head():
    assert len(ScriptDirectory.from_config(migrate.alembic_config()).get_heads()) == 1


def test_upgrade_downgrade_upgrade_and_models_match(pg_admin_url):
    url = support.create_database(pg_admin_url)
    try:
        migrate.upgrade(url)
        assert {"users", "sessions", "api_keys", "audit_events"} <= tables(url)
        migrate.downgrade(url, "base")
        assert tables(url) <= {"alembic_version"}
        migrate.upgrade(url)
        command.check(migrate.alembic_config(url))  # raises if models and schema differ
    finally:
        support.drop_database(pg_admin_url, url)


def test_concurrent_migrations_serialize_on_the_advisory_lock(pg_admin_url):
    """Three `blogstore migrate` processes at once (as replicas would): all succeed, one schema."""
    url = support.create_database(pg_admin_url)
    env = {**os.environ, **support.server_env(url)}
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "server", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = [p.communicate(timeout=120)[0].decode() for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0], outputs
        assert all("(at head)" in out for out in outputs)
        engine = create_engine(normalize_url(url))
        with engine.connect() as connection:
            assert migrate.current_revisions(connection) == migrate.head_revisions()
        engine.dispose()
    finally:
        support.drop_database(pg_admin_url, url)

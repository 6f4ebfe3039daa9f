"""Expand/contract: a rolling deploy keeps old pods ready while the schema moves ahead of them.

The server under test runs the real code (its head is CODE_HEAD). The database is migrated
with a copy of migrations/ that has newer revisions (NEXT, then AFTER), as the next release's
migration Job would: old code has no file for them and reads their declared compatibility
from the database.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, select

from server.app import App, create_server
from server.health import NOT_SERVING, SERVING
from storage import migrate
from storage.engine import normalize_url
from tests import support
from tests.support import make_settings

_SCRIPT = migrate.script_directory()
CODE_HEAD = migrate.CodeSchema(_SCRIPT).head
PARENT = _SCRIPT.get_revision(CODE_HEAD).down_revision  # the code head's parent
NEXT, AFTER = (f"{int(CODE_HEAD) + n:04d}" for n in (1, 2))  # the next release's revisions
# (revision, compatible_since) of every real migration from 0009 on, as the table holds them.
REAL_ROWS = {
    (r.revision, migrate.declared_compatible_since(_SCRIPT, r.revision))
    for r in _SCRIPT.iterate_revisions(CODE_HEAD, "0008")  # 0008 itself left out
}

ADD_NULLABLE_COLUMN = f'''"""users.nickname: an expand step, compatible with code at {CODE_HEAD}"""
import sqlalchemy as sa
from alembic import op

revision = "{NEXT}"
down_revision = "{CODE_HEAD}"
branch_labels = None
depends_on = None
compatible_since = "{CODE_HEAD}"


def upgrade():
    op.add_column("users", sa.Column("nickname", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("users", "nickname")
'''

RENAME_COLUMN = f'''"""users.username -> users.handle: breaks every older code revision"""
from alembic import op

revision = "{AFTER}"
down_revision = "{NEXT}"
branch_labels = None
depends_on = None
compatible_since = "{AFTER}"


def upgrade():
    op.alter_column("users", "username", new_column_name="handle")


def downgrade():
    op.alter_column("users", "handle", new_column_name="username")
'''


def next_release(tmp_path: Path, *migrations: str) -> Path:
    """A copy of migrations/ with more revisions: the next release's script directory."""
    location = tmp_path / "migrations"
    shutil.copytree(
        migrate.PROJECT_ROOT / "migrations", location, ignore=shutil.ignore_patterns("__pycache__")
    )
    for source in migrations:
        revision = source.split('revision = "')[1][:4]
        (location / "versions" / f"{revision}_next_release.py").write_text(source)
    return location


def run_alembic(url: str, location: Path, action: str, revision: str) -> None:
    config = migrate.alembic_config(url)
    config.set_main_option("script_location", str(location))
    getattr(command, action)(config, revision)


def compatibility_rows(url: str) -> set[tuple[str, str]]:
    engine = create_engine(normalize_url(url))
    with engine.connect() as connection:
        rows = connection.execute(select(migrate.schema_compatibility)).all()
    engine.dispose()
    return {tuple(row) for row in rows}


class Watcher:
    """Records every status a Health/Watch stream delivers."""

    def __init__(self, target: str) -> None:
        self.statuses: list[int] = []
        self._channel = grpc.insecure_channel(target)
        request = health_pb2.HealthCheckRequest(service="")
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(request)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._stream:
                self.statuses.append(response.status)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=5)
        self._channel.close()


@pytest.fixture
def database(pg_admin_url: str, template_database: str) -> Iterator[str]:
    url = support.create_database(pg_admin_url, template=template_database)
    yield url
    support.drop_database(pg_admin_url, url)


@pytest.fixture
def server(database: str) -> Iterator[App]:
    app = create_server(make_settings(database))
    app.start()
    yield app
    app.stop(grace=0)


def check(app: App) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def settle(app: App) -> None:
    """Run a few checks (as the monitor does every 0.2 s here) and let watchers hear of them."""
    for _ in range(3):
        app.health.check_now()
    time.sleep(0.3)


def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_the_real_migrations_declare_consistently():
    script = migrate.script_directory()
    assert migrate.check_declarations(script) == []
    assert migrate.CodeSchema(script).head == CODE_HEAD


def test_inconsistent_declarations_are_found(tmp_path):
    declared = f'compatible_since = "{CODE_HEAD}"'
    too_old = ADD_NULLABLE_COLUMN.replace(declared, 'compatible_since = "0007"')
    location = next_release(tmp_path, too_old)
    problems = migrate.check_declarations(ScriptDirectory(str(location)))
    floor = migrate.declared_compatible_since(_SCRIPT, CODE_HEAD)
    assert problems == [f"{NEXT}: compatible_since 0007 is older than its parent's {floor}"]
    shutil.rmtree(location)
    newer = ADD_NULLABLE_COLUMN.replace(declared, 'compatible_since = "9999"')
    location = next_release(tmp_path, newer)
    problems = migrate.check_declarations(ScriptDirectory(str(location)))
    assert problems == [f"{NEXT}: compatible_since 9999 is not an ancestor"]


def test_each_migration_records_its_compatibility(database, tmp_path):
    assert ("0009", "0008") in REAL_ROWS
    assert compatibility_rows(database) == REAL_ROWS
    location = next_release(tmp_path, ADD_NULLABLE_COLUMN, RENAME_COLUMN)
    run_alembic(database, location, "upgrade", "head")
    assert compatibility_rows(database) == REAL_ROWS | {(NEXT, CODE_HEAD), (AFTER, AFTER)}
    run_alembic(database, location, "downgrade", CODE_HEAD)
    assert compatibility_rows(database) == REAL_ROWS
    migrate.downgrade(database, "0008")  # 0009's own downgrade drops the table
    migrate.upgrade(database)
    assert compatibility_rows(database) == REAL_ROWS


def test_rolling_deploy_keeps_old_pods_ready_until_an_incompatible_step(
    server, database, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="server.health")
    assert check(server) == SERVING
    location = next_release(tmp_path, ADD_NULLABLE_COLUMN, RENAME_COLUMN)
    watcher = Watcher(f"127.0.0.1:{server.port}")
    try:
        assert until(lambda: watcher.statuses == [SERVING])
        # The next release's migration Job adds a column: pods on CODE_HEAD stay ready.
        run_alembic(database, location, "upgrade", NEXT)
        settle(server)
        assert check(server) == SERVING
        assert watcher.statuses == [SERVING]
        assert (
            f"schema {NEXT} is newer than the code's head {CODE_HEAD} and declares itself "
            "compatible " in caplog.text
        )
        # A step that breaks CODE_HEAD takes them out of rotation, with the reason in the log.
        run_alembic(database, location, "upgrade", AFTER)
        settle(server)
        assert check(server) == NOT_SERVING
        assert watcher.statuses == [SERVING, NOT_SERVING]
        assert (
            f"NOT_SERVING, schema {AFTER} is ahead of the code's head {CODE_HEAD} and not "
            f"compatible with it (it needs code at {AFTER} or newer)" in caplog.text
        )
        # Rolled back to the code's head: ready again.
        run_alembic(database, location, "downgrade", CODE_HEAD)
        settle(server)
        assert check(server) == SERVING
        assert watcher.statuses == [SERVING, NOT_SERVING, SERVING]
    finally:
        watcher.close()


def test_a_newer_schema_without_a_declaration_is_incompatible(server, database, tmp_path):
    silent = ADD_NULLABLE_COLUMN.replace(f'compatible_since = "{CODE_HEAD}"\n', "")
    run_alembic(database, next_release(tmp_path, silent), "upgrade", "head")
    settle(server)
    assert check(server) == NOT_SERVING


def test_a_schema_behind_the_code_is_not_ready_and_says_to_migrate(server, database, caplog):
    caplog.set_level(logging.INFO, logger="server.health")
    migrate.downgrade(database, PARENT)
    settle(server)
    assert check(server) == NOT_SERVING
    assert (
        f"NOT_SERVING, schema {PARENT} is behind the code's head {CODE_HEAD}: run "
        "`blogstore migrate`" in caplog.text
    )
    migrate.upgrade(database)
    settle(server)
    assert check(server) == SERVING

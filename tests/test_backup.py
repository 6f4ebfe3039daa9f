"""Backups that restore: a dump under write load, verify, restore, rotation, damaged files."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from sqlalchemy import text

from storage import migrate
from storage.engine import start_embedded
from storage.lifecycle import pgtools
from storage.lifecycle.backup import Manifest, list_backups, take_backup
from storage.lifecycle.pgtools import BackupError, Tool
from storage.lifecycle.restore import restore
from storage.lifecycle.rotation import Policy, keep
from storage.lifecycle.verify import verify
from tests import support
from tests.support import server_env, unique

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC


def cli(*args: object, database_url: str | None, **env: str) -> subprocess.CompletedProcess:
    """`python -m server ARGS` with DATABASE_URL set (or unset: the embedded default)."""
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update(env)
    if database_url:
        environ.update(server_env(database_url))
    return subprocess.run(
        [sys.executable, "-m", "server", *map(str, args)],
        env=environ, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def query(url: str, sql: str) -> list[tuple]:
    engine = support.admin_engine(url)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(text(sql))]
    engine.dispose()
    return rows


def scratch_databases(admin_url: str) -> int:
    sql = "SELECT count(*) FROM pg_database WHERE datname LIKE 'blogstore_verify_%'"
    return query(admin_url, sql)[0][0]


def visible_in(snapshot: str, xid32: int) -> bool:
    """Whether a transaction id (a row's 32-bit xmin) is visible in a pg_snapshot text."""
    xmin, xmax, xip = snapshot.split(":")
    low, high = int(xmin), int(xmax)
    xid = (high & ~0xFFFFFFFF) | xid32  # widen to 64 bits: the epoch nearest the snapshot's
    if xid - high > 1 << 31:
        xid -= 1 << 32
    return xid < low or (xid < high and str(xid) not in xip.split(","))


@pytest.fixture(scope="module")
def writer(new_account, connect):
    account = new_account()
    return articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


@pytest.fixture
def fresh_database(pg_admin_url):
    """An empty database (no schema at all), dropped afterwards."""
    urls: list[str] = []

    def make() -> str:
        urls.append(support.create_database(pg_admin_url))
        return urls[-1]

    yield make
    for url in urls:
        support.drop_database(pg_admin_url, url)


def test_backup_under_write_load_restores_exactly_the_snapshot(
    database_url, pg_admin_url, writer, fresh_database, tmp_path
):
    acked: list[tuple[str, float, float]] = []  # (id, sent, acknowledged), monotonic
    lock, stop = threading.Lock(), threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            while not stop.is_set():
                sent = time.monotonic()
                article = writer.CreateArticle(
                    pb.CreateArticleRequest(
                        article=pb.Article(title=f"load {n} {unique()}", content_markdown="Text.")
                    )
                ).article
                with lock:
                    acked.append((article.id, sent, time.monotonic()))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(acked) < count and time.monotonic() < deadline and not errors:
            time.sleep(0.01)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(30)
        began = time.monotonic()
        backup = take_backup(database_url, tmp_path / "backups", embedded=False, compression=1)
        ended = time.monotonic()
        wait_for(len(acked) + 30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors

    # Which articles the dump's snapshot saw, from each row's creating transaction.
    live = dict(query(database_url, "SELECT id::text, xmin::text::bigint FROM articles"))
    in_snapshot = {i for i, xid in live.items() if visible_in(backup.manifest.snapshot, xid)}
    before = {i for i, _, ack in acked if ack < began}
    after = {i for i, sent, _ in acked if sent > ended}
    assert before and after, "the writes must straddle the backup"
    assert before <= in_snapshot  # acknowledged before the backup began: in it
    assert not after & in_snapshot  # sent after it ended: not in it
    assert backup.manifest.row_counts["public.articles"] == len(in_snapshot)

    verified = cli("backup", "verify", backup.dump, database_url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert "each count matches the manifest" in verified.stdout

    target = fresh_database()
    restored = cli("restore", backup.dump, database_url=target)
    assert restored.returncode == 0, restored.stderr
    assert {i for (i,) in query(target, "SELECT id::text FROM articles")} == in_snapshot
    heads = migrate.head_revisions()
    assert {r for (r,) in query(target, "SELECT version_num FROM alembic_version")} == heads


def test_the_manifest_describes_the_dump(database_url, tmp_path):
    backup = take_backup(database_url, tmp_path, embedded=False, compression=1)
    on_disk = Manifest.load(backup.manifest_path)
    assert on_disk == backup.manifest
    assert on_disk.size == backup.dump.stat().st_size and len(on_disk.sha256) == 64
    assert on_disk.alembic_revision == ",".join(sorted(migrate.head_revisions()))
    moments = (on_disk.started_at, on_disk.snapshot_time, on_disk.finished_at)
    assert sorted(moments, key=dt.datetime.fromisoformat) == list(moments)
    assert on_disk.server_version.split()[0].count(".") == 1
    assert {"public.users", "public.articles", "public.alembic_version"} <= set(on_disk.row_counts)
    assert oct(backup.dump.stat().st_mode & 0o777) == oct(0o600)  # holds password hashes
    names = {backup.dump.name, backup.manifest_path.name}
    assert {p.name for p in tmp_path.iterdir()} == names  # no temporary file left behind


def test_an_interrupted_backup_leaves_no_file_under_a_final_name(
    database_url, tmp_path, monkeypatch
):
    real_run = pgtools.run

    def dump_then_die(*args, **kwargs):
        real_run(*args, **kwargs)  # the whole dump is written to its temporary name ...
        raise KeyboardInterrupt  # ... and the process is stopped before the rename

    monkeypatch.setattr(pgtools, "run", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        take_backup(database_url, tmp_path, embedded=False, compression=1)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def module_backup(database_url, tmp_path_factory):
    directory = tmp_path_factory.mktemp("backup")
    return take_backup(database_url, directory, embedded=False, compression=1)


def damaged_copy(backup, directory: Path, damage) -> Path:
    directory.mkdir(exist_ok=True)
    shutil.copy(backup.manifest_path, directory / backup.manifest_path.name)
    data = bytearray(backup.dump.read_bytes())
    (directory / backup.dump.name).write_bytes(damage(data))
    return directory / backup.dump.name


def flip_one_byte(data: bytearray) -> bytes:
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def test_a_flipped_byte_fails_verify_before_any_restore(
    module_backup, database_url, pg_admin_url, tmp_path
):
    dump = damaged_copy(module_backup, tmp_path / "damaged", flip_one_byte)
    scratch_before = scratch_databases(pg_admin_url)
    result = cli("backup", "verify", dump, database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.startswith("blogstore backup verify: FAILED: ")
    assert "does not match the manifest's" in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    assert scratch_databases(pg_admin_url) == scratch_before


def test_a_truncated_dump_fails_verify_before_any_restore(
    module_backup, database_url, pg_admin_url, tmp_path
):
    dump = damaged_copy(module_backup, tmp_path / "damaged", lambda data: data[:-1000])
    scratch_before = scratch_databases(pg_admin_url)
    with pytest.raises(BackupError) as caught:
        verify(dump, database_url, embedded=False)
    size = module_backup.manifest.size
    assert str(caught.value) == (
        f"{dump.name}: size {size - 1000:,} bytes, the manifest says {size:,}: "
        "truncated since it was written"
    )
    assert scratch_databases(pg_admin_url) == scratch_before


def test_a_count_differing_from_the_manifest_fails_and_the_scratch_database_is_dropped(
    module_backup, database_url, pg_admin_url, tmp_path
):
    dump = damaged_copy(module_backup, tmp_path / "copy", bytes)
    manifest = json.loads((tmp_path / "copy" / module_backup.manifest_path.name).read_text())
    manifest["row_counts"]["public.users"] += 1
    (tmp_path / "copy" / module_backup.manifest_path.name).write_text(json.dumps(manifest))
    scratch_before = scratch_databases(pg_admin_url)
    with pytest.raises(BackupError, match=r"table public.users: \d+ rows restored, the manifest"):
        verify(dump, database_url, embedded=False)
    assert scratch_databases(pg_admin_url) == scratch_before


def test_a_dump_without_its_manifest_is_incomplete(module_backup, database_url, tmp_path):
    shutil.copy(module_backup.dump, tmp_path / module_backup.dump.name)
    with pytest.raises(BackupError, match="no manifest beside it .*: incomplete backup"):
        verify(tmp_path / module_backup.dump.name, database_url, embedded=False)


def test_restore_refuses_a_non_empty_database_unless_forced(
    module_backup, pg_admin_url, template_database
):
    target = support.create_database(pg_admin_url, template=template_database)
    try:
        refused = cli("restore", module_backup.dump, database_url=target)
        assert refused.returncode == 1
        assert "FAILED: the database is not empty (" in refused.stderr
        assert "public.alembic_version 1" in refused.stderr and "--force" in refused.stderr
        forced = cli("restore", "--force", module_backup.dump, database_url=target)
        assert forced.returncode == 0, forced.stderr
        assert "--force: dropping everything in the database: " in forced.stdout
        restored = query(target, "SELECT count(*) FROM users")[0][0]
        assert restored == module_backup.manifest.row_counts["public.users"]
    finally:
        support.drop_database(pg_admin_url, target)


def test_a_backup_of_an_older_schema_is_migrated_to_head(pg_admin_url, fresh_database, tmp_path):
    script = ScriptDirectory.from_config(migrate.alembic_config())
    (head,) = script.get_heads()
    older = script.get_revision(head).down_revision
    source = fresh_database()
    migrate.upgrade(source, older)
    # Written in SQL: the code writes what the head schema has, which the older one may lack.
    ((user_id,),) = query(
        source,
        "INSERT INTO users (email, username, password_hash) "
        "VALUES ('old@example.com', 'old', 'x') RETURNING id::text",
    )
    backup = take_backup(source, tmp_path, embedded=False, compression=1)
    assert backup.manifest.alembic_revision == older

    report = verify(backup.dump, source, embedded=False)
    assert report.migrated_from == older and report.read["users"] == 1

    target = fresh_database()
    restored = restore(backup.dump, target, embedded=False)
    assert restored.migrated_from == older
    assert query(target, "SELECT version_num FROM alembic_version") == [(head,)]
    assert query(target, "SELECT id::text FROM users") == [(user_id,)]


def month_of_hourly_backups() -> dict[dt.datetime, dt.datetime]:
    start = dt.datetime(2024, 3, 1, tzinfo=UTC)
    return {start + dt.timedelta(hours=h): start + dt.timedelta(hours=h) for h in range(31 * 24)}


def test_rotation_over_a_simulated_month_keeps_exactly_the_policy():
    taken = month_of_hourly_backups()  # 2024-03-01 00:00 to 03-31 23:00, one per hour
    now = dt.datetime(2024, 3, 31, 23, 30, tzinfo=UTC)
    kept = keep(taken, Policy(hourly=48, daily=14, weekly=8), now)

    def at(day: int, hour: int = 23) -> dt.datetime:
        return dt.datetime(2024, 3, day, hour, tzinfo=UTC)

    hourly = {at(30) - dt.timedelta(hours=h) for h in range(24)} | {
        at(31) - dt.timedelta(hours=h) for h in range(24)
    }
    daily = {at(day) for day in range(18, 32)}  # the last of each of the last 14 days
    # ISO weeks (Monday to Sunday) of March 2024: the month starts in week 9 (Fri 1 to Sun 3).
    weekly = {at(3), at(10), at(17), at(24), at(31)}
    assert kept == hourly | daily | weekly
    assert len(kept) == 48 + 12 + 3


def test_rotation_applied_every_hour_ends_where_one_pass_does():
    policy = Policy(hourly=48, daily=14, weekly=8)
    remaining: dict[dt.datetime, dt.datetime] = {}
    for moment in sorted(month_of_hourly_backups()):
        remaining[moment] = moment
        now = moment + dt.timedelta(minutes=5)
        survivors = keep(remaining, policy, now)
        remaining = {k: v for k, v in remaining.items() if k in survivors}
    assert set(remaining) == keep(month_of_hourly_backups(), policy, now)


def test_rotation_edges():
    old = dt.datetime(2020, 1, 1, tzinfo=UTC)
    now = dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert keep({"a": old, "b": old + dt.timedelta(hours=1)}, Policy(), now) == {"b"}
    assert keep({}, Policy(), now) == set()
    taken = {f"h{h}": now - dt.timedelta(hours=h) for h in range(10)}
    assert keep(taken, Policy(hourly=3, daily=0, weekly=0), now) == {"h0", "h1", "h2"}


def test_prune_removes_what_the_policy_does_not_keep_and_dead_partials(tmp_path):
    now = dt.datetime.now(UTC)
    for hours_ago in (0, 1, 2, 30, 31, 24 * 20):
        started = now - dt.timedelta(hours=hours_ago)
        name = f"db-{started:%Y%m%dT%H%M%SZ}.dump"
        (tmp_path / name).write_bytes(b"x")
        manifest = Manifest(
            file=name, sha256="0" * 64, size=1, started_at=started.isoformat(),
            finished_at=started.isoformat(), database="db", server_version="15.2",
            pg_dump_version="16.2", alembic_revision="0008", snapshot="1:1:",
            snapshot_time=started.isoformat(),
        )  # fmt: skip
        (tmp_path / name).with_suffix(".json").write_text(manifest.to_json())
    dead = tmp_path / ".db-old.dump.partial"
    dead.write_bytes(b"x")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    running = tmp_path / ".db-now.dump.partial"
    running.write_bytes(b"x")

    env = {"BLOGSTORE_BACKUP_KEEP_HOURLY": "2", "BLOGSTORE_BACKUP_KEEP_DAILY": "1",
           "BLOGSTORE_BACKUP_KEEP_WEEKLY": "0"}  # fmt: skip
    result = cli("backup", "prune", "--backup-dir", tmp_path, database_url="postgresql:///x", **env)
    assert result.returncode == 0, result.stderr
    removed = [line for line in result.stdout.splitlines() if line.startswith("  removed ")]
    left = [b.manifest.started for b in list_backups(tmp_path)]
    # Kept: the newest two hours; the newest of today is among them.
    assert len(left) == 2 and len(removed) == 4 + 1
    assert not dead.exists() and running.exists()
    listed = cli("backup", "list", "--backup-dir", tmp_path, database_url="postgresql:///x", **env)
    assert listed.stdout.splitlines()[0] == f"2 backup(s) in {tmp_path}"
    assert "prunable" not in listed.stdout


def test_choosing_a_pg_dump_for_the_server():
    tools = [Tool(Path("/a/pg_dump"), (15, 20)), Tool(Path("/b/pg_dump"), (16, 2))]
    assert pgtools.choose("pg_dump", tools, 15, "15.20").path == Path("/b/pg_dump")
    assert pgtools.choose("pg_dump", tools, 16, "16.1").path == Path("/b/pg_dump")
    with pytest.raises(BackupError) as caught:
        pgtools.choose("pg_dump", tools, 17, "17.0")
    assert str(caught.value) == (
        "no pg_dump of PostgreSQL 17 or newer: the server is 17.0, found 15.20 (/a/pg_dump), "
        "16.2 (/b/pg_dump); install postgresql-client-17 (or newer) or put its pg_dump on PATH"
    )


def test_the_embedded_default_backs_up_with_pgservers_pg_dump(tmp_path):
    data_dir = tmp_path / "embedded"
    try:
        # Started here, so the commands below attach to it rather than each starting one.
        migrate.upgrade(start_embedded(data_dir))
        made = cli("backup", "--data-dir", data_dir, "--prune", database_url=None)
        assert made.returncode == 0, made.stderr
        (backup,) = list_backups(data_dir / "backups")
        assert backup.manifest.pg_dump_version == backup.manifest.server_version.split()[0]
        assert "removed 0 backup(s)" in made.stdout
        checked = cli("backup", "verify", "--latest", "--data-dir", data_dir, database_url=None)
        assert checked.returncode == 0, checked.stderr
    finally:
        stop_embedded(data_dir / "pgdata")


def stop_embedded(pgdata: Path) -> None:
    import pgserver

    pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
    assert not (pgdata / "postmaster.pid").exists()

"""A throwaway primary and a streaming replica of it, for tests of read replicas.

The shared test server allows no replication, so the primary is a cluster of its own: initdb
(as user postgres) with wal_level=replica and replication allowed from 127.0.0.1, migrated to
head, then `pg_basebackup -R` makes the replica, which streams from it. Data lives under
/tmp/replicas-*; both are stopped and removed at the end. Ports come from
BLOGSTORE_TEST_CLUSTER_PORTS (default 65000-65999).

    with replicated_clusters() as pair:
        pair.primary_url, pair.replica_url, pair.replica.stop(), pair.replica.start()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from storage import migrate

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "blogstore"
_SETTINGS = """
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 5
hot_standby = on
hot_standby_feedback = on
fsync = off
shared_buffers = 32MB
max_connections = 120
wal_receiver_status_interval = 1s
"""


def _free_port(taken: set[int]) -> int:
    low, high = (int(p) for p in os.environ.get("BLOGSTORE_TEST_CLUSTER_PORTS", "65000-65999")
                 .split("-"))  # fmt: skip
    for port in range(low, high + 1):
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise AssertionError(f"no free port in {low}-{high}")


class Node:
    """One cluster: its data directory and port, started and stopped with pg_ctl."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.data, self.port = root, root / "pgdata", port
        self.log = root / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root}"
        result = run("pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "60",
                     "start", check=False)  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(result.stdout + result.stderr + self.log.read_text())

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def sql(self, statement: str, database: str = DATABASE) -> list[tuple]:
        with contextlib.closing(psycopg2.connect(self.url(database))) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []


def run(tool: str, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=300)


@dataclass
class ReplicatedClusters:
    primary: Node
    replica: Node

    @property
    def primary_url(self) -> str:
        return self.primary.url()

    @property
    def replica_url(self) -> str:
        return self.replica.url()

    def pause_replay(self) -> None:
        """The replica keeps receiving WAL but applies none: its lag grows."""
        self.replica.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.replica.sql("SELECT pg_wal_replay_resume()")

    def wait_caught_up(self, timeout: float = 30) -> None:
        target = self.primary.sql("SELECT pg_current_wal_flush_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.replica.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if done[0][0]:
                return
            time.sleep(0.05)
        raise AssertionError(f"the replica did not replay {target} within {timeout} s")


def skip_without_binaries() -> None:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_basebackup").exists():
        pytest.skip(f"read replica tests need the PostgreSQL 15 binaries in {PG_BIN}")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("read replica tests run initdb as user postgres: they need root and runuser")


@contextlib.contextmanager
def replicated_clusters() -> Iterator[ReplicatedClusters]:
    """A migrated primary and its streaming replica (caught up); removed afterwards."""
    skip_without_binaries()
    base = Path(tempfile.mkdtemp(prefix="replicas-", dir="/tmp"))
    shutil.chown(base, "postgres", "postgres")
    taken: set[int] = set()
    primary = Node(base / "primary", _free_port(taken))
    replica = Node(base / "replica", _free_port(taken))
    for node in (primary, replica):
        node.root.mkdir()
        shutil.chown(node.root, "postgres", "postgres")
    try:
        run("initdb", "-D", primary.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync")  # fmt: skip
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS)
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        primary.start()
        primary.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        migrate.upgrade(primary.url())
        run("pg_basebackup", "-h", "127.0.0.1", "-p", primary.port, "-U", "postgres",
            "-D", replica.data, "-R", "-X", "stream", "-c", "fast")  # fmt: skip
        replica.start()
        pair = ReplicatedClusters(primary, replica)
        pair.wait_caught_up()
        yield pair
    finally:
        replica.stop("immediate")
        primary.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

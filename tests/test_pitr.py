"""Point-in-time recovery drill with pgBackRest on a throwaway cluster.

The shipped deploy/pgbackrest files are used as they are: postgresql.conf is appended to the
cluster's own, and pgbackrest.conf is the configuration, with only its paths and port
overridden through PGBACKREST_* environment variables (which take precedence over the file).
Writes at T1 after a full backup, more at T2, a restore to T1: only the T1 writes exist.
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
from pathlib import Path

import psycopg2
import pytest
from blogstore import client
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc

from server.admin import create_admin
from server.app import create_server
from storage import migrate
from tests.support import PASSWORD, make_settings, unique

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "pgbackrest"
STANZA = "blogstore"

pytestmark = pytest.mark.skipif(
    shutil.which("pgbackrest") is None,
    reason="pgbackrest is not installed: `apt-get install -y pgbackrest` (.ci/run installs it)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL 15 cluster run as the postgres user in a temporary directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pgdata, self.socket = base / "pgdata", base / "socket"
        self.port = free_port()
        assert self.port != 5432  # never the shared cluster
        self.env = {
            **os.environ,
            "PGBACKREST_CONFIG": str(DEPLOY / "pgbackrest.conf"),
            "PGBACKREST_REPO1_PATH": str(base / "repo"),
            "PGBACKREST_LOG_PATH": str(base / "log"),
            "PGBACKREST_LOCK_PATH": str(base / "lock"),
            "PGBACKREST_SPOOL_PATH": str(base / "spool"),
            "PGBACKREST_PG1_PATH": str(self.pgdata),
            "PGBACKREST_PG1_PORT": str(self.port),
            "PGBACKREST_PG1_SOCKET_PATH": str(self.socket),
        }

    def run(self, *argv: str | Path, timeout: float = 300) -> str:
        """Run a program as postgres, with the pgBackRest environment; raise on failure."""
        command = ["runuser", "-u", "postgres", "--", *map(str, argv)]
        result = subprocess.run(
            command, env=self.env, cwd=self.base, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def pgbackrest(self, *args: str) -> str:
        return self.run("pgbackrest", f"--stanza={STANZA}", *args)

    def init(self) -> None:
        for sub in ("socket", "repo", "log", "lock", "spool"):
            (self.base / sub).mkdir()
        shutil.chown(self.base, "postgres", "postgres")
        for path in self.base.iterdir():
            shutil.chown(path, "postgres", "postgres")
        self.run(
            PG_BIN / "initdb", "-D", self.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        settings = (
            f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.socket}'\n"
            + (DEPLOY / "postgresql.conf").read_text()
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def start(self) -> None:
        log = self.base / "log" / "postgres.log"
        self.run(PG_BIN / "pg_ctl", "-D", self.pgdata, "-l", log, "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self.run(PG_BIN / "pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        with contextlib.closing(psycopg2.connect(self.url(database))) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else []


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """The throwaway cluster; always stopped and removed, whatever the test did."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="blogstore-pitr-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(cluster.base, ignore_errors=True)


def create_articles(url: str, titles: list[str]) -> None:
    """Through the real server, as an admin writing its own articles."""
    settings = make_settings(url)
    _, key = create_admin(
        url, settings, email=f"{unique()}@example.com", username=unique(), password=PASSWORD
    )
    app = create_server(settings)
    app.start()
    try:
        with client.connect(f"127.0.0.1:{app.port}", key, default_timeout=30) as channel:
            stub = articles_pb2_grpc.ArticlesServiceStub(channel)
            for title in titles:
                stub.CreateArticle(
                    pb.CreateArticleRequest(article=pb.Article(title=title, content_markdown="x"))
                )
    finally:
        app.stop(grace=0)


def test_restore_to_a_point_in_time_keeps_only_what_was_written_before_it(cluster):
    cluster.sql("CREATE DATABASE blogstore")
    url = cluster.url("blogstore")
    migrate.upgrade(url)
    cluster.pgbackrest("stanza-create")
    cluster.pgbackrest("check")  # archiving works: the archive_command of postgresql.conf
    cluster.pgbackrest("--type=full", "backup")

    create_articles(url, ["T1 first", "T1 second"])  # after the backup: replayed from WAL
    (target,) = cluster.sql("SELECT clock_timestamp()::text")[0]
    time.sleep(1.5)
    create_articles(url, ["T2 first", "T2 second"])
    cluster.pgbackrest("check")  # switches WAL and waits until the T2 segment is archived
    assert len(cluster.sql("SELECT 1 FROM articles", "blogstore")) == 4

    cluster.stop()
    cluster.pgbackrest(
        "--type=time", f"--target={target}", "--target-action=promote", "--delta", "restore"
    )
    cluster.start()
    deadline = time.monotonic() + 120
    while cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
        assert time.monotonic() < deadline, "the restored cluster never finished recovery"
        time.sleep(0.2)

    titles = sorted(t for (t,) in cluster.sql("SELECT title FROM articles", "blogstore"))
    assert titles == ["T1 first", "T1 second"]
    users = cluster.sql("SELECT count(*) FROM users WHERE is_admin", "blogstore")[0][0]
    assert users == 1  # the admin made for the T2 writes is gone as well
    (info,) = cluster.sql("SELECT count(*) FROM alembic_version", "blogstore")
    assert info == (1,)

"""Test helpers: where PostgreSQL comes from, throwaway databases, a cuttable TCP proxy."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from blogstore import client
from blogstore.v1 import users_pb2, users_pb2_grpc
from sqlalchemy import create_engine, make_url, text

from bench.pgbouncer import PgBouncer
from server.app import App, create_server
from server.config import Settings, parse_service_keys
from storage.engine import normalize_url

SERVICE_KEY = "svc-key-" + "k" * 24
ROTATED_SERVICE_KEY = "svc-key-" + "r" * 24
PASSWORD = "correct horse battery"
# Keys of user secrets (BLOGSTORE_SECRET_KEYS entries: key id, 32 bytes in URL-safe base64).
SECRET_KEY_A = "a:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
SECRET_KEY_B = "b:" + base64.urlsafe_b64encode(bytes(range(32, 64))).decode()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """An admin URL: BLOGSTORE_TEST_DATABASE_URL, else Docker (testcontainers), else pgserver."""
    url = os.environ.get("BLOGSTORE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15") as container:
            yield container.get_connection_url()
        return
    import pgserver

    data_dir = Path(tempfile.mkdtemp(prefix="blogstore-test-pg-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    yield server.get_uri("postgres")


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def admin_engine(url: str):
    return create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")


def create_database(admin_url: str, *, template: str | None = None) -> str:
    """Create a uniquely named database (cloned from `template` if given); returns its URL."""
    name = f"blogstore_test_{uuid.uuid4().hex[:12]}"
    engine = admin_engine(admin_url)
    with engine.connect() as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    engine.dispose()
    return url_with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = admin_engine(admin_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def url_with_database(url: str, database: str) -> str:
    return normalize_url(url).set(database=database).render_as_string(hide_password=False)


class TcpProxy:
    """Forwards a local TCP port to PostgreSQL; `cut()` makes the database vanish, `restore()`.

    `hang()` freezes it instead: connections stay open and new ones are accepted, but no byte
    goes through (a stuck disk, a frozen proxy) until `resume()`.
    """

    def __init__(self, database_url: str) -> None:
        parsed = make_url(database_url)
        host = parsed.query.get("host") or parsed.host or "127.0.0.1"
        port = parsed.port or 5432
        if isinstance(host, tuple):
            host = host[0]
        if host.startswith("/"):
            self._target: tuple = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._target = (socket.AF_INET, (host, port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._serving = True
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, database_url: str) -> str:
        parsed = normalize_url(database_url)
        query = {k: v for k, v in parsed.query.items() if k != "host"}
        proxied = parsed.set(host="127.0.0.1", port=self.port, query=query)
        return proxied.render_as_string(hide_password=False)

    def cut(self) -> None:
        with self._lock:
            self._serving = False
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._connections.clear()

    def restore(self) -> None:
        with self._lock:
            self._serving = True

    def hang(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            with self._lock:
                if not self._serving:
                    client.close()
                    continue
                upstream = socket.socket(self._target[0], socket.SOCK_STREAM)
                upstream.connect(self._target[1])
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    """A throwaway PostgreSQL cluster of its own (initdb, pg_ctl as user postgres), for tests
    that kill, stop or freeze the database. `url` is its admin URL over TCP."""

    def __init__(self, root: Path) -> None:
        if os.geteuid() != 0 or not (POSTGRES_BIN / "initdb").exists():
            pytest.skip("needs root and the PostgreSQL 15 binaries for a throwaway cluster")
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres")
        self._as_postgres("initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync")  # fmt: skip

    def _as_postgres(self, tool: str, *args: object, check: bool = True):
        command = ["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / tool), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self, timeout: float = 60) -> None:
        """Start it; after a kill -9, retry while the dead postmaster's children linger."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        deadline = time.monotonic() + timeout
        while True:
            result = self._as_postgres("pg_ctl", "-D", self.data, "-o", options, "-l", self.log,
                                       "-w", "-t", "30", "start", check=False)  # fmt: skip
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(result.stdout + result.stderr + self.log.read_text())
            time.sleep(0.5)

    def kill_postmaster(self) -> None:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-m", "immediate", "stop", check=False)


# The run's PgBouncer when BLOGSTORE_TEST_PGBOUNCER=1 (started by conftest's `pgbouncer`).
PGBOUNCER: list[PgBouncer] = []


def through_pgbouncer(database_url: str) -> str:
    """`database_url` through the run's PgBouncer, if there is one and it fronts that server
    (a TcpProxy's or a throwaway Cluster's URL stays as it is)."""
    if PGBOUNCER and PGBOUNCER[0].fronts(database_url):
        return PGBOUNCER[0].url_for(database_url)
    return database_url


def server_env(database_url: str) -> dict[str, str]:
    """DATABASE_URL (and the direct URL past PgBouncer) for a `python -m server` process."""
    pooled = through_pgbouncer(database_url)
    if pooled == database_url:
        return {"DATABASE_URL": database_url}
    return {"DATABASE_URL": pooled, "BLOGSTORE_DIRECT_DATABASE_URL": database_url}


# bcrypt's cost on test servers: 4 (a millisecond) instead of 12 (a quarter second each, half
# the suite's time). Settings refuse less than 12, so it is set past their validation (and a
# copy's replace() needs bcrypt_rounds=12 again); the tests of the cost itself, of login timing
# and of health with every worker busy ask for 12.
TEST_BCRYPT_ROUNDS = 4


def make_settings(
    database_url: str, *, bcrypt_rounds: int = TEST_BCRYPT_ROUNDS, **overrides: object
) -> Settings:
    """A test server's settings; with BLOGSTORE_TEST_PGBOUNCER=1 it goes through PgBouncer,
    and only its session-bound work (LISTEN) connects straight to `database_url`."""
    pooled = through_pgbouncer(database_url)
    base = Settings(
        database_url=pooled,
        direct_database_url=None if pooled == database_url else database_url,
        host="127.0.0.1",
        port=0,
        threads=8,
        # The race tests fire up to 50 calls (and 2 batches) at once from one principal:
        # shares as large as the pools (tests/test_fairness.py sets small ones).
        max_calls_per_principal=8,
        max_calls_per_service=8,
        max_batches_per_principal=2,
        bcrypt_threads=2,  # the suite creates accounts in parallel
        health_interval_seconds=0.2,
        shutdown_grace_seconds=5,
        service_keys=parse_service_keys(f"crawler:{SERVICE_KEY},crawler:{ROTATED_SERVICE_KEY}"),
        page_token_secret=b"test-secret",
        metrics_port=0,
        secret_keys=SECRET_KEY_A,
    )
    return base.replace(**overrides).model_copy(update={"bcrypt_rounds": bcrypt_rounds})


def start_app(apps: list[App], database_url: str, **overrides: object) -> App:
    """A started App on `database_url`, added to `apps` (the `started` fixture stops them)."""
    app = create_server(make_settings(database_url, **overrides))
    app.start()
    apps.append(app)
    return app


def unique(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Account:
    """A user created through the API, with an access token and a stub bound to it."""

    def __init__(self, user: users_pb2.User, token: str, stub: users_pb2_grpc.UsersServiceStub):
        self.user, self.token, self.stub = user, token, stub

    @property
    def id(self) -> str:
        return self.user.id


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    """Run a call that must fail; return its status code."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def details_of(call: Callable[[], object]) -> client.ErrorDetails:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return client.error_details(caught.value)


def p99_reported(latencies: list[float], what: str, path: Path) -> float:
    """The p99 of `latencies` (seconds), printed with p50 and max and written (ms) to `path`."""
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(f"{what} over {len(ordered)} trials: p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")  # fmt: skip
    path.write_text(f"{p99 * 1000:.1f}\n")
    return p99

"""A PgBouncer of our own in transaction mode, in front of a PostgreSQL (tests, benchmarks).

Debian's `pgbouncer` binary with an ini under /tmp/pgbouncer-*: a wildcard database entry
(`* = host=... port=...`), so databases created after it started (one per test module) are
reachable too; auth_type trust with a userlist naming the connecting user. It refuses to run as
root, so as root it runs as `postgres`. Stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url

from storage.engine import normalize_url

BINARY_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
pool_mode = transaction
max_client_conn = 400
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
server_idle_timeout = 10
server_lifetime = 600
autodb_idle_timeout = 60
ignore_startup_parameters = extra_float_digits
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
admin_users = {user}
"""


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((path for path in BINARY_CANDIDATES if os.path.exists(path)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_of(url: str) -> tuple[str, int]:
    """(host or Unix socket directory, port) of a URL (pgserver's: `?host=/dir`)."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    return host, parsed.port or 5432


def _account_for(upstream_host: str) -> pwd.struct_passwd:
    """Who runs PgBouncer under root: the owner of a Unix socket directory (pgserver runs
    its server as a user of its own, the directory closed to others), else postgres."""
    if upstream_host.startswith("/"):
        owner = pwd.getpwuid(os.stat(upstream_host).st_uid)
        if owner.pw_uid != 0:
            return owner
    return pwd.getpwnam("postgres")


class PgBouncer:
    """A running PgBouncer in front of the PostgreSQL of `upstream_url` (any of its databases).

    `url_for(direct_url)`: the same database, user and password through PgBouncer.
    """

    def __init__(self, upstream_url: str, *, port: int | None = None, pool_size: int = 20) -> None:
        """`pool_size`: server connections per database and user (1: every client takes
        turns on one, so any session state a client left behind would meet the next)."""
        found = binary()
        if found is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        parsed = make_url(upstream_url)
        self.upstream_host, self.upstream_port = _server_of(upstream_url)
        user = parsed.username or "postgres"
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            INI.format(
                host=self.upstream_host,
                port=self.upstream_port,
                listen_port=self.port,
                root=self.root,
                user=user,
                pool_size=pool_size,
            )
        )
        run_as = {}
        if os.geteuid() == 0:  # "PgBouncer should not run as root"
            account = _account_for(self.upstream_host)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.log = self.root / "pgbouncer.log"
        self.process = subprocess.Popen(  # noqa: S603 - the installed binary, our ini
            [found, str(self.root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, **run_as,
        )  # fmt: skip
        self._wait_listening()

    def _wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self._log_tail()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text()[-2000:]
        return "(no log)"

    def url_for(self, direct_url: str) -> str:
        """`direct_url` (a database on the upstream server) through this PgBouncer."""
        parsed = normalize_url(direct_url)
        query = {k: v for k, v in parsed.query.items() if k != "host"}
        through = parsed.set(host="127.0.0.1", port=self.port, query=query)
        return through.render_as_string(hide_password=False)

    def fronts(self, url: str) -> bool:
        """Whether `url` points at the server this PgBouncer stands in front of."""
        return _server_of(url) == (self.upstream_host, self.upstream_port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(upstream_url: str, **options: int) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(upstream_url, **options)
    try:
        yield bouncer
    finally:
        bouncer.stop()

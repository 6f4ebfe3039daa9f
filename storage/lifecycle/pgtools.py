"""The PostgreSQL client programs (pg_dump, pg_restore): finding a fitting one and running it.

pg_dump refuses a server newer than itself, and a dump is only as good as the pg_dump that
wrote it, so the embedded cluster uses the programs pgserver ships with it, and an external
server the newest installed programs of at least the server's major version.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from storage.engine import normalize_url

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class BackupError(Exception):
    """Backup, verify or restore failed; the message says what differs or what to do."""


@dataclass(frozen=True)
class Tool:
    path: Path
    version: tuple[int, int]  # (major, minor)

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass(frozen=True)
class Connection:
    """A database as the client programs take it: a password-free DSN plus the environment."""

    dsn: str
    env: dict[str, str]

    @classmethod
    def from_url(cls, url: str) -> Connection:
        parsed = normalize_url(url)
        env = dict(os.environ)
        if parsed.password:  # via the environment: a command line is visible to `ps`
            env["PGPASSWORD"] = str(parsed.password)
        dsn = parsed.set(drivername="postgresql", password=None)
        return cls(dsn=dsn.render_as_string(hide_password=False), env=env)


def connect(url: str, **kwargs: Any) -> psycopg2.extensions.connection:
    """A raw psycopg2 connection (the snapshot export and the checks need no ORM)."""
    parsed = normalize_url(url).set(drivername="postgresql")
    return psycopg2.connect(
        parsed.render_as_string(hide_password=False),
        connect_timeout=10,
        application_name="blogstore-backup",
        **kwargs,
    )


def one_row(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The row a query that always returns one returned (fetchone's None would be a bug)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {cur.query!r}")
    return row


def server_version(url: str) -> tuple[int, str]:
    """(server_version_num, server_version), e.g. (150020, '15.20')."""
    with contextlib.closing(connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int")
        (number,) = one_row(cur)
    return number, f"{number // 10000}.{number % 10000}"


def embedded_bin_dir() -> Path | None:
    """pgserver's bin directory, located without importing pgserver (no side effects)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if path.is_dir() else None


def candidate_paths(name: str) -> list[Path]:
    """Every installed copy of a program: pgserver's, Debian's per-version ones, PATH's."""
    dirs: list[Path] = []
    if (embedded := embedded_bin_dir()) is not None:
        dirs.append(embedded)
    dirs += sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")))
    paths = [d / name for d in dirs if (d / name).is_file()]
    if on_path := shutil.which(name):
        paths.append(Path(on_path))
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def tool_version(path: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(  # noqa: S603 - a PostgreSQL program found above
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def choose(name: str, tools: Iterable[Tool], server_major: int, server_text: str) -> Tool:
    """The newest tool whose major version is at least the server's, or a clear error."""
    tools = list(tools)
    fitting = [t for t in tools if t.version[0] >= server_major]
    if fitting:
        return max(fitting, key=lambda t: t.version)
    found = ", ".join(f"{t.version_text} ({t.path})" for t in tools) or "none"
    raise BackupError(
        f"no {name} of PostgreSQL {server_major} or newer: the server is {server_text}, "
        f"found {found}; install postgresql-client-{server_major} (or newer) or put its "
        f"{name} on PATH"
    )


def find_tool(name: str, url: str, *, embedded: bool) -> Tool:
    """The program to run against the server at `url` (pgserver's own for the embedded one)."""
    if embedded and (bin_dir := embedded_bin_dir()) is not None:
        path = bin_dir / name
        version = tool_version(path)
        if version is None:
            raise BackupError(f"{path} does not run")
        return Tool(path, version)
    number, text = server_version(url)
    tools = [
        Tool(path, version)
        for path in candidate_paths(name)
        if (version := tool_version(path)) is not None
    ]
    return choose(name, tools, number // 10000, text)


def run(tool: Tool, args: Sequence[str], connection: Connection) -> None:
    """Run a client program; a failure raises BackupError with the end of its stderr."""
    argv = [str(tool.path), *args]
    result = subprocess.run(  # noqa: S603 - our arguments, no shell
        argv, env=connection.env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise BackupError(f"{tool.path.name} {tool.version_text} failed: {tail}")

"""`blogstore serve | migrate | create-admin | healthcheck | retention | partitions |
import-json | rotate-secrets | enable-embeddings | enable-phrase-index`."""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url
from server.commands import backup as backup_commands
from server.commands import embeddings as embeddings_commands
from server.commands import healthcheck as healthcheck_commands
from server.commands import import_json as import_json_commands
from server.commands import partitions as partitions_commands
from server.commands import phrase_index as phrase_index_commands
from server.commands import retention as retention_commands
from server.commands import secrets as secrets_commands
from server.logs import configure_logging

if TYPE_CHECKING:
    from server.config import ConfigError, Settings
    from server.telemetry.exporter import MetricsExporter, NoMetrics

log = logging.getLogger("blogstore")


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["serve"]:
        _stop_quietly_while_starting()
    from server.config import ConfigError, Settings  # pydantic is slow to import

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env().replace(
            data_dir=getattr(args, "data_dir", None),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            workers=getattr(args, "workers", None),
        )
    except ConfigError as error:
        return _configuration_error(parser, error)
    configure_logging(settings.log_level, settings.log_format)
    try:
        return args.command(args, settings)
    except ConfigError as error:  # found while starting: TLS files, healthcheck flags
        return _configuration_error(parser, error)


def _configuration_error(parser: argparse.ArgumentParser, error: ConfigError) -> int:
    for line in str(error).splitlines():
        print(f"{parser.prog}: configuration error: {line}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blogstore",
        description="blogstore: the blog-poster persistence service, served over gRPC. "
        "Settings come from the environment (see the README's Configuration table).",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version and schema revision"
    )
    commands = parser.add_subparsers(
        required=True, metavar="COMMAND", help="`blogstore COMMAND --help` lists its options"
    )

    serve = commands.add_parser("serve", help="run the gRPC server")
    add_data_dir_option(serve)
    serve.add_argument("--host", help="bind address (env BLOGSTORE_HOST, default [::])")
    serve.add_argument("--port", type=int, help="port (env BLOGSTORE_PORT, default 50051)")
    serve.add_argument("--workers", type=int, help="processes (env BLOGSTORE_WORKERS, default 1)")
    serve.set_defaults(command=serve_command)

    migrate = commands.add_parser("migrate", help="apply or inspect schema migrations")
    add_data_dir_option(migrate)
    migrate.add_argument(
        "action",
        nargs="?",
        default="upgrade",
        choices=("upgrade", "downgrade", "current"),
        help="upgrade (default), downgrade, or print the current revision",
    )
    migrate.add_argument(
        "revision", nargs="?", help="target revision (upgrade: head; downgrade: -1)"
    )
    migrate.set_defaults(command=migrate_command)

    admin = commands.add_parser("create-admin", help="create an admin user and print an API key")
    add_data_dir_option(admin)
    admin.add_argument("--email", required=True, help="the admin's email address")
    admin.add_argument("--username", required=True, help="the admin's login name")
    admin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (default: a random, unusable one)",
    )
    admin.set_defaults(command=create_admin_command)

    healthcheck_commands.register(commands)
    backup_commands.register(commands)
    retention_commands.register(commands)
    partitions_commands.register(commands)
    import_json_commands.register(commands)
    secrets_commands.register(commands)
    embeddings_commands.register(commands)
    phrase_index_commands.register(commands)
    return parser


class _VersionAction(argparse.Action):
    """Like argparse's "version", but the schema revision is only looked up when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_string())
        parser.exit()


def version_string() -> str:
    """`blogstore 0.1.0 (schema 0008)`: the package and the newest migration it carries."""
    from importlib.metadata import PackageNotFoundError, version

    from storage.migrate import head_revisions

    try:
        package = version("blogstore")
    except PackageNotFoundError:  # running from a source tree that is not installed
        package = "unknown"
    return f"blogstore {package} (schema {', '.join(sorted(head_revisions()))})"


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    if settings.workers > 1 and settings.port == 0:
        raise SystemExit("--workers > 1 needs a fixed --port")
    from server.tls import certificate_files

    stop = _stop_on_signals()  # first: a SIGTERM during start-up still ends in an orderly stop
    certificate_files(settings)  # bad TLS settings or files stop it here, before any worker
    settings = settings.replace(database_url=database_url(settings, migrate_embedded=True))
    # Before any process defines a metric: the metrics directory (server/telemetry/exporter.py).
    with _metrics(settings) as metrics:
        if settings.workers == 1:
            return run_worker(settings, stop)
        return _serve_workers(settings, metrics, stop)


def _metrics(settings: Settings) -> MetricsExporter | NoMetrics:
    from server.telemetry import exporter

    if settings.metrics_port == 0:
        return exporter.NoMetrics()
    database_url = settings.database_url.get_secret_value() if settings.database_url else ""
    return exporter.MetricsExporter(settings.metrics_port, settings.host, database_url)


def _serve_workers(
    settings: Settings, metrics: MetricsExporter | NoMetrics, stopping: threading.Event
) -> int:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings,), name=f"blogstore-worker-{i}")
        for i in range(settings.workers)
    ]

    def forward(_signum: int, _frame: object) -> None:
        stopping.set()
        for worker in workers:
            if worker.pid and worker.is_alive():
                worker.terminate()  # SIGTERM: each worker drains its calls

    # Installed before the workers start, so no SIGTERM finds the parent unprepared.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.start()
        if stopping.is_set():
            worker.terminate()
    running = {worker.sentinel: worker for worker in workers}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            worker = running.pop(sentinel)  # type: ignore[call-overload]
            worker.join()
            if worker.pid is not None:  # always: it was started
                metrics.worker_exited(worker.pid)  # its live gauges leave the sums
    # A worker stopped by the forwarded SIGTERM before it could install its handler had
    # nothing in flight: that is an orderly stop too.
    clean = (0, -signal.SIGTERM)
    return 0 if all(w.exitcode in clean for w in workers) else 1


def _worker_main(settings: Settings) -> None:
    stop = _stop_on_signals()  # first: a SIGTERM during start-up then still drains cleanly
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run_worker(settings, stop))


def _stop_quietly_while_starting() -> None:
    """A SIGTERM before serve has anything in flight is an orderly stop: exit 0.

    Installed before the slow imports; serve replaces it with its draining handler.
    """

    def stop(_signum: int, _frame: object) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (default 8 per core).

    With 16 request threads each arena keeps freed memory of its own, and the resident size of
    a server importing large batches grew far past what it used. Linux/glibc only; a no-op
    elsewhere.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8  # from malloc.h
    libc.mallopt(m_arena_max, arenas)


def run_worker(settings: Settings, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then drain in-flight calls and return 0."""
    from server.app import create_server

    stop = stop or _stop_on_signals()
    limit_malloc_arenas()
    app = create_server(settings)
    app.start()
    # Polled, not stop.wait(): the signal handler sets the event in this thread, between two
    # bytecodes, and inside wait() this thread may hold the lock set() needs (a deadlock).
    while not stop.is_set():
        time.sleep(0.1)
    log.info(
        "shutting down: draining in-flight calls for up to %ss", settings.shutdown_grace_seconds
    )
    app.stop()
    log.info("stopped")
    return 0


def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import create_engine

    from storage import migrate
    from storage.engine import normalize_url

    url = database_url(settings, migrate_embedded=False, direct=True)  # the advisory lock
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "-1")
    engine = create_engine(normalize_url(url))
    with engine.connect() as connection:
        current = migrate.current_revisions(connection) or {"<base>"}
    engine.dispose()
    heads = migrate.head_revisions()
    state = "at head" if current == heads else f"head is {', '.join(sorted(heads))}"
    print(f"current revision: {', '.join(sorted(current))} ({state})")
    return 0


def create_admin_command(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from server.admin import create_admin
    from storage.errors import DomainError

    password = (
        sys.stdin.readline().rstrip("\n") if args.password_stdin else secrets.token_urlsafe(32)
    )
    url = database_url(settings, migrate_embedded=True)
    try:
        user_id, api_key = create_admin(
            url, settings, email=args.email, username=args.username, password=password
        )
    except DomainError as error:
        print(f"create-admin failed: {error.message}", file=sys.stderr)
        return 1
    print(f"created admin {args.username} <{args.email}> with id {user_id}; its API key:")
    print(api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())

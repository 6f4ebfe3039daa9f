"""The processes under test (blogstore, the no-op server) and what we read from them.

Both run as subprocesses of the harness, started with this interpreter, so the process tree
(utime + stime, RSS) belongs to them alone. PostgreSQL CPU is read from the backends whose
process title names the bench database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

REPO = Path(__file__).resolve().parent.parent
# The checkout whose server (and migrations) are measured: this one, unless
# `--server-checkout DIR` points at another (to compare branches with the same harness).
CHECKOUT = {"dir": REPO, "python": sys.executable}


def use_checkout(directory: Path) -> None:
    CHECKOUT.update(checkout_of(directory))


def server_command(*argv: str, checkout: dict | None = None) -> tuple[list[str], Path]:
    """argv and cwd to run `python -m server ...` of the measured checkout (or `checkout`)."""
    checkout = checkout or CHECKOUT
    return [checkout["python"], "-m", "server", *argv], checkout["dir"]


def checkout_of(directory: Path) -> dict:
    """{"dir", "python"} of another blogstore checkout with a .venv."""
    directory = directory.resolve()
    python = directory / ".venv" / "bin" / "python"
    if not (directory / "server" / "app.py").exists() or not python.exists():
        raise SystemExit(f"{directory} is not a blogstore checkout with a .venv (uv sync there)")
    return {"dir": directory, "python": str(python)}


def free_port() -> int:
    """A free port: any, or one of BLOGSTORE_BENCH_PORTS ("low-high") on a shared machine."""
    low, _, high = os.environ.get("BLOGSTORE_BENCH_PORTS", "").partition("-")
    candidates = range(int(low), int(high) + 1) if high else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            if port == 0 or port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return s.getsockname()[1]
    raise OSError(f"no free port in BLOGSTORE_BENCH_PORTS={low}-{high}")


_HANDED_OUT: set[int] = set()  # (a port handed out may not be bound yet)


@dataclass
class Managed:
    """A subprocess we started, by pid; stop() ends it (and only it) with SIGTERM, then KILL."""

    name: str
    popen: subprocess.Popen
    port: int
    key: str = ""
    log: Path | None = None
    workers: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                for proc in reversed(self.processes()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                self.popen.wait(5)
        if self.log is not None and not os.environ.get("BLOGSTORE_BENCH_KEEP_LOGS"):
            self.log.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _spawn(name: str, argv: list[str], env: dict[str, str], port: int, cwd: Path = REPO) -> Managed:
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    with log.open("w") as out:
        popen = subprocess.Popen(  # noqa: S603 - our interpreter, our modules
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Managed(name, popen, port, log=log)


def start_server(
    database_url: str,
    *,
    workers: int = 1,
    key: str | None = None,
    page_secret: str | None = None,
    metrics: bool = True,
    checkout: dict | None = None,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> Managed:
    """`python -m server serve --port P` on the bench database, with a service key.

    As deployed by default: metrics on (on a free port), tracing off (no OTEL_* variable).
    `extra_env`: more variables (BLOGSTORE_* settings). `port`: default a free one.
    """
    port = port or free_port()
    key = key or secrets.token_urlsafe(24)[:32]
    inherited = ("BLOGSTORE_", "DATABASE_", "OTEL_", "PROMETHEUS_")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(inherited)},
        "DATABASE_URL": database_url,
        "BLOGSTORE_METRICS_PORT": str(free_port()) if metrics else "0",
        "BLOGSTORE_SERVICE_KEYS": f"bench:{key}",
        "BLOGSTORE_LOG_LEVEL": "WARNING",
        "BLOGSTORE_SHUTDOWN_GRACE_SECONDS": "2",
        # Page tokens must survive a restart (workers 1 -> 2) and be valid on every worker.
        "BLOGSTORE_PAGE_TOKEN_SECRET": page_secret or "bench-page-token-secret",
        **(extra_env or {}),
    }
    if (checkout or CHECKOUT)["dir"] != REPO:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the other checkout untouched
    argv, cwd = server_command(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        checkout=checkout,
    )  # fmt: skip
    server = _spawn(f"server-w{workers}", argv, env, port, cwd)
    server.key, server.workers = key, workers
    try:
        wait_serving(server, timeout=60)
    except Exception:
        server.stop()
        raise
    return server


def start_noop(*, threads: int = 16, workers: int = 1, database_url: str | None = None) -> Managed:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.noop",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--workers",
        str(workers),
        *(["--database-url", database_url] if database_url else []),
    ]
    noop = _spawn(f"noop-w{workers}", argv, dict(os.environ), port)
    noop.workers = workers
    try:
        wait_serving(noop, timeout=30, health=False)
    except Exception:
        noop.stop()
        raise
    return noop


def wait_serving(managed: Managed, *, timeout: float, health: bool = True) -> None:
    """Until the server answers health SERVING (or, for the no-op, accepts a channel)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if managed.popen.poll() is not None:
            raise RuntimeError(f"{managed.name} exited:\n{managed.log_tail()}")
        with grpc.insecure_channel(managed.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                if not health:
                    break
                reply = health_pb2_grpc.HealthStub(channel).Check(  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except (grpc.RpcError, grpc.FutureTimeoutError):
                pass
        time.sleep(0.2)
    else:
        raise TimeoutError(f"{managed.name} did not start in {timeout}s:\n{managed.log_tail()}")
    if managed.workers > 1:
        time.sleep(1.0)  # the other workers bind the same port a moment later


def tree_cpu(processes: list[psutil.Process]) -> float:
    """utime + stime (seconds) summed over `processes`, skipping any that vanished."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def db_backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (by process title)."""
    needle = f" {database} "
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] != "postgres":
                continue
            title = " ".join(proc.info["cmdline"] or ())
            if needle in title + " ":
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class RssSampler(threading.Thread):
    """Samples the RSS of `managed`'s process tree every `interval` seconds; keeps peaks,
    and each periodic sample's total in MB (`samples`)."""

    def __init__(self, managed: Managed, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.managed, self.interval = managed, interval
        self.peak_total = 0
        self.peak_process = 0
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.sample())
            self._stop_event.wait(self.interval)

    def sample(self) -> float:
        """The tree's RSS now, in MB."""
        total = 0
        for proc in self.managed.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = proc.memory_info().rss
                total += rss
                self.peak_process = max(self.peak_process, rss)
        self.peak_total = max(self.peak_total, total)
        return total / 2**20

    def stop(self) -> tuple[float, float]:
        """(peak RSS of the tree, peak RSS of one process), in MB."""
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak_total / 2**20, self.peak_process / 2**20

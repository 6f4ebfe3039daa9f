"""grpc.health.v1: liveness for the process, readiness for the database and its schema.

`liveness` is SERVING while the process answers: the probe travels through the same gRPC
event loop as every call, so a frozen server fails it, and it never asks the database (a
database outage must take pods out of rotation, not restart them). `""` and each service name
report readiness: the database answers within a wall-clock limit and its schema is compatible
with this code (storage.migrate.CodeSchema). A background monitor polls for readiness over a
connection of its own, so a busy pool cannot make health lie.

The servicer never sends while holding a lock: `set` only swaps the status and wakes the
watchers, each Watch stream sends from its own thread with no lock held, and the close callback
that grpcio runs on its event thread only flips a flag. (grpcio-health-checking's servicer
sends under the lock the close callback needs, which froze the whole server under Watch churn.)
Check, List and Watch run on pools of their own, so probes answer while every worker is busy.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from storage import deadlines
from storage.engine import make_engine
from storage.migrate import CodeSchema, SchemaVerdict

log = logging.getLogger(__name__)

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
LIVENESS = "liveness"

PROBE_THREADS = 2
WATCHERS_PER_PEER = 8
MAX_WATCHERS = 64
RECHECK_SECONDS = 5.0  # a watcher also looks at its stream this often, in case a wake-up is lost
# Wall-clock bound of one readiness check (and at most the interval, so that a hung database
# is NOT_SERVING within two intervals). A re-check asked for by a failed call is bounded by
# FAILURE_CHECK_SECONDS, and while not ready the monitor checks that often.
CHECK_TIMEOUT_SECONDS = 5.0
FAILURE_CHECK_SECONDS = 1.0
RECHECK_AT_MOST_EVERY_SECONDS = 0.5  # failed calls ask for re-checks no more often than this
STATEMENT_TIMEOUT_MS = 2000
MIN_INTERVAL_SECONDS = 0.1  # the monitor never spins, whatever the setting says


@dataclass(eq=False)
class _Watcher:
    service: str
    peer: str
    sent: int | None = None  # the last status this stream sent
    closed: bool = False
    released: bool = False


def _on_pool(behavior: Callable[..., Any], pool: ThreadPoolExecutor) -> Callable[..., Any]:
    """The handler as grpcio wants it to run on `pool` instead of the request workers."""

    @functools.wraps(behavior)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        return behavior(request, context)

    handler.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return handler


def _peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7': watchers are counted per client host."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(
        self, *, watchers_per_peer: int = WATCHERS_PER_PEER, max_watchers: int = MAX_WATCHERS
    ) -> None:
        self.watchers_per_peer = watchers_per_peer
        self.max_watchers = max_watchers
        self._statuses: dict[str, int] = {}  # replaced, never mutated: Check reads it unlocked
        self._changed = threading.Condition()
        self._watchers: set[_Watcher] = set()
        self._per_peer: Counter[str] = Counter()
        self._shutting_down = False
        probes = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="health")
        # One thread per open stream, plus spares that turn the surplus away at once.
        streams = ThreadPoolExecutor(max_watchers + 2, thread_name_prefix="health-watch")
        self.Check = _on_pool(self._check, probes)
        self.List = _on_pool(self._list, probes)
        self.Watch = _on_pool(self._watch, streams)

    @property
    def open_watchers(self) -> int:
        return len(self._watchers)

    def status(self, service: str) -> int | None:
        return self._statuses.get(service)

    def set(self, service: str, status: int) -> None:
        """Publish a status; the same status again sends nothing."""
        with self._changed:
            if self._shutting_down or self._statuses.get(service) == status:
                return
            self._statuses = {**self._statuses, service: status}
            self._changed.notify_all()

    def enter_graceful_shutdown(self) -> None:
        """Everything NOT_SERVING for good; each watcher sends it and its stream ends."""
        with self._changed:
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            self._shutting_down = True
            self._changed.notify_all()

    def _check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown service {request.service!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    def _list(
        self,
        request: health_pb2.HealthListRequest,  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
        context: grpc.ServicerContext,
    ) -> health_pb2.HealthListResponse:  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
        return health_pb2.HealthListResponse(  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )

    def _watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        watcher = _Watcher(request.service, _peer_host(context.peer()))
        with self._changed:
            refusal = self._admit(watcher)
        if refusal:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        if not context.add_callback(functools.partial(self._close, watcher)):
            self._release(watcher)  # the call already ended
            return iter(())
        return self._stream(watcher, context)

    def _admit(self, watcher: _Watcher) -> str:
        if len(self._watchers) >= self.max_watchers:
            return f"too many health watchers on this server (at most {self.max_watchers})"
        if self._per_peer[watcher.peer] >= self.watchers_per_peer:
            return f"too many health watchers from one client (at most {self.watchers_per_peer})"
        self._watchers.add(watcher)
        self._per_peer[watcher.peer] += 1
        return ""

    def _stream(
        self, watcher: _Watcher, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        """Send the status now and on each change; grpcio sends each yield with no lock held."""
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(functools.partial(self._due, watcher), RECHECK_SECONDS)
                    status, closed = self._current(watcher), watcher.closed
                    ending = self._shutting_down and status == watcher.sent
                if closed:
                    return
                if ending:
                    context.set_code(grpc.StatusCode.UNAVAILABLE)
                    context.set_details("the server is shutting down")
                    return
                if status == watcher.sent:  # a quiet stretch: is the client still there?
                    if not context.is_active():
                        return
                    continue
                watcher.sent = status
                yield health_pb2.HealthCheckResponse(status=status)
        finally:
            self._release(watcher)

    def _due(self, watcher: _Watcher) -> bool:
        return watcher.closed or self._shutting_down or self._current(watcher) != watcher.sent

    def _current(self, watcher: _Watcher) -> int:
        return self._statuses.get(watcher.service, SERVICE_UNKNOWN)

    def _close(self, watcher: _Watcher) -> None:
        """grpcio's close callback, on its event thread: flag, wake, release; nothing blocks."""
        with self._changed:
            watcher.closed = True
            self._changed.notify_all()
        self._release(watcher)

    def _release(self, watcher: _Watcher) -> None:
        with self._changed:
            if watcher.released:
                return
            watcher.released = True
            self._watchers.discard(watcher)
            self._per_peer[watcher.peer] -= 1
            if not self._per_peer[watcher.peer]:
                del self._per_peer[watcher.peer]


class HealthMonitor:
    """Polls the database for readiness and publishes it; liveness stays SERVING until stop()."""

    def __init__(
        self,
        servicer: HealthServicer,
        database_url: str,
        service_names: Iterable[str],
        interval_seconds: float,
        *,
        code_schema: CodeSchema | None = None,
    ) -> None:
        self.servicer = servicer
        self.readiness_names = ["", *service_names]
        self.interval = max(interval_seconds, MIN_INTERVAL_SECONDS)
        self.code_schema = code_schema or CodeSchema()
        self._engine = make_engine(
            database_url,
            pool_size=1,
            pool_timeout=2,
            connect_timeout=2,
            tcp_user_timeout_ms=3000,
            application_name="blogstore-health",
        )
        # The database is asked on a thread of its own, so a hung check cannot stall the
        # monitor: past CHECK_TIMEOUT_SECONDS it counts as not ready, and no second check
        # starts until the hung one returns.
        self._asker = ThreadPoolExecutor(1, thread_name_prefix="health-check")
        self._pending: Future[SchemaVerdict] | None = None
        self._pending_since = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # recheck_soon: check now instead of after the interval
        self._urgent = False
        self._last_check = 0.0
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._checking = threading.Lock()  # check_now may also be called from outside
        self._last: SchemaVerdict | None = None
        self.serving: bool | None = None
        servicer.set(LIVENESS, SERVING)
        self._publish(False)

    def start(self) -> None:
        self._thread.start()

    @property
    def check_limit(self) -> float:
        """The wall-clock bound of one check: CHECK_TIMEOUT_SECONDS, at most the interval."""
        return min(CHECK_TIMEOUT_SECONDS, self.interval)

    def recheck_soon(self) -> None:
        """A call found the database unreachable or hung: check now, not after the interval.
        Cheap and non-blocking (request threads call it); at most one re-check per 0.5 s."""
        if not self._wake.is_set():
            self._urgent = True
            self._wake.set()

    def check_now(self, limit: float | None = None) -> bool:
        """Ask the database once (bounded in time) and publish the answer."""
        with self._checking:
            self._last_check = time.monotonic()
            verdict = self._ask(self.check_limit if limit is None else limit)
            if verdict != self._last:
                level = logging.INFO if verdict.ready else logging.WARNING
                state = "SERVING" if verdict.ready else "NOT_SERVING"
                log.log(level, "health: %s, %s", state, verdict.reason)
                self._last = verdict
            self._publish(verdict.ready)
            return verdict.ready

    def stop(self) -> None:
        """Enter graceful shutdown: NOT_SERVING from now on, and stop polling."""
        self.servicer.enter_graceful_shutdown()
        self._stop.set()
        self._wake.set()
        self._asker.shutdown(wait=False, cancel_futures=True)
        self._engine.dispose()

    def _ask(self, limit: float) -> SchemaVerdict:
        """A hung check keeps its thread (until its connection's deadline cuts it, see
        _verdict), and later checks wait only for what is left of its limit."""
        if self._pending is None or self._pending.done():
            try:
                self._pending = self._asker.submit(self._verdict, limit)
                self._pending_since = time.monotonic()
            except RuntimeError:  # stopped
                return SchemaVerdict(False, "the server is shutting down")
        # (a short wait even then: a check that was slow may be answering just now)
        left = max(min(limit, 0.25), self._pending_since + limit - time.monotonic())
        try:
            verdict = self._pending.result(timeout=left)
        except FutureTimeout:
            return SchemaVerdict(False, f"the database did not answer within {limit:g} s")
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            cause = getattr(error, "orig", None) or error  # libpq's words, no statement
            first_line = (str(cause).strip().splitlines() or [""])[0]
            return SchemaVerdict(False, f"database check failed: {first_line}")
        return verdict

    def _verdict(self, limit: float) -> SchemaVerdict:
        # The check's connection (connect, statement) is cut a second after its limit: a hung
        # database cannot keep the check thread, and the next check opens a fresh connection.
        with (
            deadlines.budget(time.monotonic() + limit + 1.0),
            self._engine.begin() as connection,
        ):
            connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            return self.code_schema.verdict(connection)

    def _publish(self, ready: bool) -> None:
        self.serving = ready
        for name in self.readiness_names:
            self.servicer.set(name, SERVING if ready else NOT_SERVING)

    def _run(self) -> None:
        while True:  # not ready: look again every second, so that readiness comes back soon
            self._wake.wait(
                self.interval if self.serving else min(self.interval, FAILURE_CHECK_SECONDS)
            )
            urgent, self._urgent = self._urgent, False
            if urgent:  # rate limit: a flood of failing calls asks, one re-check answers
                time.sleep(
                    max(0.0, self._last_check + RECHECK_AT_MOST_EVERY_SECONDS - time.monotonic())
                )
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check_now(min(self.check_limit, FAILURE_CHECK_SECONDS) if urgent else None)
            except Exception:  # the monitor must outlive any one failure
                log.exception("health: the readiness check failed unexpectedly")

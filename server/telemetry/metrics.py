"""The Prometheus series of one server process (listed in the README's Metrics section).

Imported only when metrics are on, and under `blogstore serve` only after exporter.py has set
PROMETHEUS_MULTIPROC_DIR: prometheus_client then keeps every value in a file of that directory,
where the one /metrics endpoint of the process tree sums them. Gauges state how workers
combine: `livesum` for counts of things, `livemin` for health (SERVING only if every worker
is), `liveall` for the pool (one series per worker `pid`: one worker's exhausted pool shows).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Finer than the Prometheus defaults at the low end: a GetArticle takes about a millisecond.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
POOL_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10)

# The names and labels of go-grpc-prometheus, so its dashboards work unchanged.
STARTED = Counter("grpc_server_started", "RPCs started on the server.", RPC_LABELS)
HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by status code.",
    (*RPC_LABELS, "grpc_code"),
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status (streams: to their end).",
    RPC_LABELS,
    buckets=RPC_BUCKETS,
)

POOL_SIZE = Gauge(
    "blogstore_db_pool_size", "Connections the pool may hold.", [], multiprocess_mode="liveall"
)
POOL_CONNECTIONS = Gauge(
    "blogstore_db_pool_connections",
    "Connections open in the pool.",
    [],
    multiprocess_mode="liveall",
)
POOL_CHECKED_OUT = Gauge(
    "blogstore_db_pool_checked_out", "Connections in use.", [], multiprocess_mode="liveall"
)
POOL_OVERFLOW = Gauge(
    "blogstore_db_pool_overflow",
    "Connections open beyond the pool size.",
    [],
    multiprocess_mode="liveall",
)
POOL_WAIT = Histogram(
    "blogstore_db_pool_wait_seconds",
    "Time to check a connection out of the pool (including opening a new one).",
    buckets=POOL_WAIT_BUCKETS,
)
POOL_TIMEOUTS = Counter(
    "blogstore_db_pool_timeouts", "Checkouts that gave up after BLOGSTORE_DB_POOL_TIMEOUT_SECONDS."
)
HEALTH = Gauge(
    "blogstore_health_serving",
    "1 while the health service reports SERVING for this service name (every worker).",
    ["service"],
    multiprocess_mode="livemin",
)
WATCHERS = Gauge(
    "blogstore_watchers_open", "Open WatchPipeline streams.", multiprocess_mode="livesum"
)
BATCH_SLOTS = Gauge(
    "blogstore_batch_slots",
    "BatchCreateArticles calls that may run at once.",
    multiprocess_mode="livesum",
)
BATCH_SLOTS_IN_USE = Gauge(
    "blogstore_batch_slots_in_use",
    "BatchCreateArticles calls running.",
    multiprocess_mode="livesum",
)
AUTH_FAILURES = Counter(
    "blogstore_auth_failures", "Calls refused as UNAUTHENTICATED, by reason.", ["reason"]
)
LIMIT_REFUSALS = Counter(
    "blogstore_usage_limit_refusals",
    "Calls refused as RESOURCE_EXHAUSTED by a usage limit, by limit.",
    ["limit"],
)
SLOW_QUERIES = Counter(
    "blogstore_slow_queries",
    "SQL statements slower than BLOGSTORE_SLOW_QUERY_MS, by statement name.",
    ["statement"],
)
REPLICA_LAG = Gauge(
    "blogstore_replica_lag_seconds",
    "How long each read replica has been missing WAL the primary has flushed (+Inf: down).",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_UP = Gauge(
    "blogstore_replica_up",
    "1 while the replica answers and replays WAL (a down replica serves no reads).",
    ["replica"],
    multiprocess_mode="livemin",
)
REPLICA_READS = Counter(
    "blogstore_replica_reads",
    "Reads that a replica may serve, by who served them: a replica, or 'primary' (none fresh "
    "enough for the read's consistency token or the lag limit, or the replica failed).",
    ["replica"],
)

# Status code names as Go spells them (codes.Code.String()), as go-grpc-prometheus labels them.
GO_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
} | {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}
LIMITS = frozenset({"cost_micros", "articles", "watchers"})


class RpcMetrics:
    """One method's series, resolved once.

    A call only queues what happened (a deque append: atomic, a tenth of a microsecond); the
    sampler adds the queue up once a second, a few file writes per method, where writing
    each value as it happens cost six file writes per call (each a lock and a getpid).
    """

    __slots__ = ("_labels", "_started", "_seconds", "_handled", "_events")

    def __init__(self, method: str, grpc_type: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self._labels = (grpc_type, service, name)
        self._started = STARTED.labels(*self._labels)
        self._seconds = HANDLING.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {
            grpc.StatusCode.OK: HANDLED.labels(*self._labels, "OK")
        }
        self._events: deque[tuple[grpc.StatusCode, float] | None] = deque()

    def started(self) -> None:
        self._events.append(None)

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        self._events.append((code, seconds))

    def flush(self) -> None:
        started, codes, durations = 0, Tally[grpc.StatusCode](), []
        for event in _drain(self._events):
            if event is None:
                started += 1
            else:
                codes[event[0]] += 1
                durations.append(event[1])
        if started:
            self._started.inc(started)
        for code, count in codes.items():
            child = self._handled.get(code)
            if child is None:
                child = self._handled[code] = HANDLED.labels(*self._labels, GO_CODE_NAMES[code])
            child.inc(count)
        _observe_all(self._seconds, durations)


_POOL_WAITS: deque[float] = deque()


def pool_wait(seconds: float, timed_out: bool) -> None:
    _POOL_WAITS.append(seconds)  # added up by the sampler, like RpcMetrics
    if timed_out:
        POOL_TIMEOUTS.inc()


def _drain(queue: deque[Any]) -> list[Any]:
    """Everything queued so far; calls may keep appending meanwhile (deque is thread-safe)."""
    items, popleft = [], queue.popleft
    try:
        while True:
            items.append(popleft())
    except IndexError:
        return items


def _observe_all(histogram: Any, values: list[float]) -> None:
    """histogram.observe() each value, with one write per bucket touched rather than per value.

    Uses the child's own fields (prometheus_client keeps per-bucket counts and a sum).
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    for index, count in Tally(bisect_left(bounds, value) for value in values).items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(values))


def auth_failure(reason: str) -> None:
    AUTH_FAILURES.labels(reason).inc()


def limit_refusal(violations: dict[str, str]) -> None:
    """One count per limit broken; subjects are `<user id>/<limit>`: only the limit is a label."""
    for subject in violations:
        limit = subject.rpartition("/")[2]
        LIMIT_REFUSALS.labels(limit if limit in LIMITS else "other").inc()


def slow_query(statement: str) -> None:
    SLOW_QUERIES.labels(statement).inc()


class MeteredSlots(threading.BoundedSemaphore):
    """A BoundedSemaphore whose slots in use are a gauge (ArticlesServicer's batch slots)."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        BATCH_SLOTS.inc(value)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        acquired = super().acquire(blocking, timeout)
        if acquired:
            BATCH_SLOTS_IN_USE.inc()
        return acquired

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        super().release(n)
        BATCH_SLOTS_IN_USE.dec(n)


class Sampler:
    """Once a second, on a thread of its own: adds up what calls queued (RpcMetrics, pool
    waits) and copies state that objects already count (pool, health, watchers) into gauges.
    A scrape may lag by up to a second; the calls themselves pay almost nothing."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._probes: list[Callable[[], None]] = [
            lambda: _observe_all(POOL_WAIT, _drain(_POOL_WAITS))
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def pool(self, current: Callable[[], Any]) -> None:
        """A QueuePool (`current()`: an engine's pool is replaced when it is disposed)."""

        def probe() -> None:
            pool = current()
            POOL_SIZE.set(pool.size())
            POOL_CHECKED_OUT.set(pool.checkedout())
            POOL_CONNECTIONS.set(pool.checkedin() + pool.checkedout())
            POOL_OVERFLOW.set(max(0, pool.overflow()))

        self._probes.append(probe)

    def health(self, serving: Callable[[], dict[str, bool]]) -> None:
        def probe() -> None:
            for name, up in serving().items():
                HEALTH.labels(name).set(1 if up else 0)

        self._probes.append(probe)

    def replicas(self, replicas: Any) -> None:
        """storage.replicas.Replicas: each replica's lag and state, and the reads served."""
        counted: dict[str, int] = {}

        def count(name: str, total: int) -> None:
            REPLICA_READS.labels(name).inc(total - counted.get(name, 0))
            counted[name] = total

        def probe() -> None:
            for replica in replicas.replicas:
                REPLICA_LAG.labels(replica.name).set(replica.lag_seconds)
                REPLICA_UP.labels(replica.name).set(1 if replica.up else 0)
                count(replica.name, replica.served)
            count("primary", replicas.primary_served)

        self._probes.append(probe)

    def watchers(self, count: Callable[[], int]) -> None:
        self._probes.append(lambda: WATCHERS.set(count()))

    def rpc(self, method: str, grpc_type: str) -> RpcMetrics:
        rpc = RpcMetrics(method, grpc_type)
        self._probes.append(rpc.flush)
        return rpc

    def sample(self) -> None:
        for probe in self._probes:
            try:
                probe()
            except Exception:  # a metric must never take the server down
                log.exception("metrics sampler failed")

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.sample()  # the last calls, and the final state (NOT_SERVING while draining)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

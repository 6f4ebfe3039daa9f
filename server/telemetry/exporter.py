"""The /metrics endpoint of `blogstore serve`: one per process tree, however many workers.

One code path for any --workers: `serve` always runs prometheus_client in multiprocess mode.
Before anything defines a metric it points PROMETHEUS_MULTIPROC_DIR at a fresh directory (or
empties the one the operator set), where every process keeps its values in files of its own.
The `serve` process answers /metrics from those files (MultiProcessCollector), marks each
worker that exits dead (its live gauges drop out; its counters stay in the sums) and removes
the files when it exits. With --workers 1 the serving process is the worker itself; nothing
else differs, so what is tested with two workers is what runs with one. The price, a
memory-mapped write instead of an in-memory add per value, is measured in BENCHMARKS.md.

Database size and per-table row estimates are read here as well, by one thread with its own
connection every STATS_INTERVAL_SECONDS, and served from memory: a scrape never queries the
database, and N workers do not query it N times.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.engine import make_engine
from storage.stats import DatabaseStats, database_stats

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATS_INTERVAL_SECONDS = 30.0


class MetricsExporter:
    """Context manager: set up the directory and serve /metrics; on exit stop and clean up."""

    def __init__(
        self,
        port: int,
        host: str,
        database_url: str,
        stats_interval: float = STATS_INTERVAL_SECONDS,
    ) -> None:
        self.port = port
        self.host = host.strip("[]")  # "[::]" -> "::"
        self.stats = DatabaseStatsCollector(database_url, stats_interval)
        self.directory: Path | None = None
        self._owned = False
        self._http: Any = None

    def __enter__(self) -> MetricsExporter:
        # prometheus_client picks in-memory or file-backed values when it is imported.
        if "prometheus_client" in sys.modules:
            raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR")
        given = os.environ.get(MULTIPROC_ENV)
        if given:
            self.directory = Path(given)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._clean()  # values of an earlier run would be summed in
        else:
            self.directory = Path(tempfile.mkdtemp(prefix="blogstore-metrics-"))
            self._owned = True
            os.environ[MULTIPROC_ENV] = str(self.directory)  # inherited by the workers
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))
        registry.register(self.stats)
        try:
            self._http, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as error:
            self._remove()
            raise SystemExit(
                f"blogstore: cannot serve metrics on {self.host}:{self.port} "
                f"(BLOGSTORE_METRICS_PORT; 0 turns metrics off): {error.strerror}"
            ) from None
        self.stats.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def worker_exited(self, pid: int) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(self.directory))

    def __exit__(self, *exc_info: object) -> None:
        self.stats.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self._remove()

    def _clean(self) -> None:
        assert self.directory is not None
        for path in self.directory.glob("*.db"):
            path.unlink(missing_ok=True)

    def _remove(self) -> None:
        if self.directory is None:
            return
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            self._clean()


class NoMetrics:
    """BLOGSTORE_METRICS_PORT=0: nothing is served or recorded."""

    def __enter__(self) -> NoMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def worker_exited(self, pid: int) -> None:
        pass


class DatabaseStatsCollector:
    """blogstore_database_size_bytes and blogstore_table_live_rows, refreshed by a thread."""

    def __init__(self, database_url: str, interval: float) -> None:
        self.database_url = database_url
        self.interval = interval
        self._latest: DatabaseStats | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-db-stats", daemon=True)
        self._engine: Any = None
        self._failing = False

    def start(self) -> None:
        self._engine = make_engine(
            self.database_url,
            pool_size=1,
            pool_timeout=2,
            connect_timeout=2,
            tcp_user_timeout_ms=3000,
            application_name="blogstore-metrics",
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._engine is not None:
            self._engine.dispose()

    def refresh(self) -> None:
        try:
            with self._engine.connect() as connection:
                latest = database_stats(connection)
        except Exception as error:  # noqa: BLE001 - an absent series says it; the log says why
            if not self._failing:
                log.warning("metrics: database statistics unavailable (%s)", type(error).__name__)
            self._failing, self._latest = True, None
            return
        self._failing, self._latest = False, latest

    def describe(self) -> list[Any]:
        return []  # registered without a collect() at start-up

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        latest = self._latest
        if latest is None:
            return
        yield GaugeMetricFamily(
            "blogstore_database_size_bytes",
            "Size of the database on disk (pg_database_size).",
            value=latest.size_bytes,
        )
        rows = GaugeMetricFamily(
            "blogstore_table_live_rows",
            "Estimated live rows per table (pg_stat_user_tables.n_live_tup).",
            labels=["table"],
        )
        for table, count in latest.live_rows.items():
            rows.add_metric([table], count)
        yield rows

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval)

"""Readiness: SERVING only while the database answers and its schema is at the code's head.

A background thread polls the database with its own connection (so a busy pool cannot make
health lie), and the Health service runs on its own small thread pool, so probes are answered
within milliseconds even when every request worker is busy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from grpc_health.v1 import health, health_pb2

from storage.engine import make_engine
from storage.migrate import current_revisions, head_revisions

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_probe_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")


class HealthServicer(health.HealthServicer):
    """grpcio's servicer with Check and Watch moved off the request workers' pool."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True, experimental_thread_pool=_probe_pool)

    def Check(self, request, context):  # noqa: N802 - gRPC method name
        return super().Check(request, context)

    Check.experimental_thread_pool = _probe_pool  # type: ignore[attr-defined]


class HealthMonitor:
    def __init__(
        self,
        servicer: HealthServicer,
        database_url: str,
        service_names: Iterable[str],
        interval_seconds: float,
    ) -> None:
        self.servicer = servicer
        self.service_names = ["", *service_names]
        self.interval = interval_seconds
        self.heads = head_revisions()
        self._engine = make_engine(
            database_url,
            pool_size=1,
            pool_timeout=2,
            connect_timeout=2,
            tcp_user_timeout_ms=3000,
            application_name="blogstore-health",
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self.serving: bool | None = None
        self._publish(False)

    def start(self) -> None:
        self._thread.start()

    def check_now(self) -> bool:
        """Ask the database once and publish the answer."""
        problem = ""
        try:
            with self._engine.connect() as connection:
                ready = current_revisions(connection) == self.heads
                if not ready:
                    problem = "schema is not at head: run `blogstore migrate`"
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            ready, problem = False, f"database unreachable ({type(error).__name__})"
        if not ready and self.serving is not False:
            log.warning("health: NOT_SERVING, %s", problem)
        elif ready and self.serving is not True:
            log.info("health: SERVING")
        self._publish(ready)
        return ready

    def stop(self) -> None:
        """Enter graceful shutdown: NOT_SERVING from now on, and stop polling."""
        self.servicer.enter_graceful_shutdown()
        self._stop.set()
        self._engine.dispose()

    def _publish(self, ready: bool) -> None:
        self.serving = ready
        status = SERVING if ready else NOT_SERVING
        for name in self.service_names:
            self.servicer.set(name, status)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_now()
            self._stop.wait(self.interval)

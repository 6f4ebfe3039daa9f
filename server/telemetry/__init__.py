"""Metrics, tracing and the slow-query log: the only code that knows prometheus_client and
OpenTelemetry.

- `Telemetry` is what one server process records; create_server builds it and hands its
  hooks to the request interceptor, the engine, Database.query and the servicers.
- metrics.py: the Prometheus series (imported only when metrics are on).
- exporter.py: the /metrics endpoint of `blogstore serve` and its multiprocess directory.
- tracing.py: OpenTelemetry (imported only when the OTEL_* environment asks for traces).
- statements.py: the slow-query log and the hot path's statement spans.

Off costs nothing: without metrics no series exist and calls skip them; without tracing no
OpenTelemetry module is even imported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from server.telemetry.statements import SlowQueryLog
from storage.errors import QuotaExceeded, ShareExceeded, Unauthenticated

if TYPE_CHECKING:
    import grpc

    from server.config import Settings
    from server.telemetry.tracing import Tracing


class _NoRpcMetrics:
    __slots__ = ()

    def started(self) -> None:
        pass

    def handled(self, code: Any, seconds: float) -> None:
        pass


NO_RPC_METRICS = _NoRpcMetrics()


class Telemetry:
    def __init__(
        self, *, metrics: bool = False, slow_query_ms: int = 200, tracer_provider: Any = None,
        owns_provider: bool = False,
    ) -> None:  # fmt: skip
        self.metrics: Any = None
        self._sampler: Any = None
        if metrics:
            from server.telemetry import metrics as series

            self.metrics = series
            self._sampler = series.Sampler()
        self.tracing: Tracing | None = None
        if tracer_provider is not None:
            from server.telemetry.tracing import Tracing

            self.tracing = Tracing(tracer_provider, owned=owns_provider)
        self.statements = SlowQueryLog(
            slow_query_ms, self.metrics.slow_query if metrics else None, self.tracing
        )

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] = os.environ) -> Telemetry:
        """Metrics unless BLOGSTORE_METRICS_PORT=0; traces when the OTEL_* environment asks."""
        provider = None
        if tracing_wanted(env):
            from server.telemetry.tracing import provider_from_env

            provider = provider_from_env(env)
        return cls(
            metrics=settings.metrics_port != 0,
            slow_query_ms=settings.slow_query_ms,
            tracer_provider=provider,
            owns_provider=True,
        )

    # -- the request interceptor's hooks ----------------------------------------------------
    def rpc(self, method: str, grpc_type: str) -> Any:
        """The method's counters and histogram (`started()`, `handled(code, seconds)`)."""
        if self._sampler is None:
            return NO_RPC_METRICS
        return self._sampler.rpc(method, grpc_type)

    def traced(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        """The handler inside OpenTelemetry's server interceptor, when tracing."""
        return handler if self.tracing is None else self.tracing.wrap(details, handler)

    def failed(self, error: BaseException) -> None:
        """Count refusals by kind: auth failures by reason, usage limits by limit."""
        if self.metrics is None:
            return
        if isinstance(error, Unauthenticated):
            self.metrics.auth_failure(error.reason)
        elif isinstance(error, QuotaExceeded) and not isinstance(error, ShareExceeded):
            # (fair-share refusals show as RESOURCE_EXHAUSTED in the per-method counts)
            self.metrics.limit_refusal(error.violations)

    # -- storage's hooks --------------------------------------------------------------------
    @property
    def observe_statement(self) -> Callable[[Any, Any], Any]:
        """For Database(observe=...): the hot path's slow-query check and span."""
        return self.statements.observe

    def instrument(self, engine: Any) -> None:
        """The engine's statements (slow log, spans) and its pool (wait, gauges)."""
        self.statements.install(engine)
        if self.tracing is not None:
            self.tracing.instrument_engine(engine)
        if self.metrics is not None:
            engine.pool.on_wait = self.metrics.pool_wait
            self._sampler.pool(lambda: engine.pool)

    def instrument_replicas(self, replicas: Any) -> None:
        """Read replicas (storage.replicas.Replicas): their statements like the primary's;
        their lag, state and reads served as series of their own."""
        for replica in replicas.replicas:
            self.statements.install(replica.engine)
            if self.tracing is not None:
                self.tracing.instrument_engine(replica.engine)
        if self._sampler is not None:
            self._sampler.replicas(replicas)

    # -- gauges of the server's parts -------------------------------------------------------
    def batch_slots(self, slots: int) -> threading.BoundedSemaphore:
        if self.metrics is None:
            return threading.BoundedSemaphore(slots)
        return self.metrics.MeteredSlots(slots)

    def watch_health(self, serving: Callable[[], dict[str, bool]]) -> None:
        if self._sampler is not None:
            self._sampler.health(serving)

    def watch_watchers(self, count: Callable[[], int]) -> None:
        if self._sampler is not None:
            self._sampler.watchers(count)

    def start(self) -> None:
        if self._sampler is not None:
            self._sampler.start()

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        if self.tracing is not None:
            self.tracing.shutdown()


def tracing_wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (OpenTelemetry's own variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )

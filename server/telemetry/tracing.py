"""OpenTelemetry traces: a span per RPC and per SQL statement, when the environment asks.

On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER is set, unless OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true; off,
nothing here is imported or installed. The SDK reads the rest of the standard variables itself
(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS, the OTLP
endpoint, headers and timeouts). Callers' W3C `traceparent` metadata is continued.

The RPC span comes from opentelemetry-instrumentation-grpc's server interceptor, SQL spans of
the ORM path from opentelemetry-instrumentation-sqlalchemy; the hot path (Database.query, a
raw DBAPI cursor that SQLAlchemy's events do not see) gets its span from the statement
observer (statements.py), and a non-blocking stream (WatchPipeline) gets its span here, ended
when the stream ends rather than when its handler returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

# Status codes that mean the server failed (OpenTelemetry's gRPC conventions); the others are
# the caller's business and leave the span's status unset.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def provider_from_env(env: Mapping[str, str] = os.environ) -> TracerProvider:
    """A TracerProvider exporting in batches to what OTEL_TRACES_EXPORTER names (otlp, console)."""
    named = "service.name" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create(
        {} if env.get("OTEL_SERVICE_NAME") or named else {"service.name": "blogstore"}
    )
    provider = TracerProvider(resource=resource)
    for name in filter(None, env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")):
        name = name.strip()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
            )
            if protocol != "grpc":
                log.warning("OTLP protocol %s is not installed here: exporting over grpc", protocol)

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console)", name)
    return provider


class Tracing:
    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned  # made from the environment: flushed and shut down with the server
        self.tracer = provider.get_tracer("blogstore")
        from opentelemetry.instrumentation.grpc import server_interceptor

        self._interceptor = server_interceptor(tracer_provider=provider)

    def wrap(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> Any:
        """`handler` inside OpenTelemetry's server interceptor: a span per call, made current."""
        return self._interceptor.intercept_service(lambda _details: handler, details)

    def instrument_engine(self, engine: Any) -> None:
        """A span per statement the engine runs (the ORM path).

        The engine's own tracer from opentelemetry-instrumentation-sqlalchemy (what its
        `instrument(engine=...)` builds), without the instrumentor's process-wide patches of
        create_engine and Engine.connect, which would trace every engine, health probes too.
        """
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import get_meter

        connections = get_meter("blogstore").create_up_down_counter(
            "db.client.connections.usage", unit="connections"
        )
        EngineTracer(
            trace.get_tracer(
                "opentelemetry.instrumentation.sqlalchemy", tracer_provider=self.provider
            ),
            engine,
            connections,
        )

    def statement_span(self, name: str, sql: str) -> AbstractContextManager[Any]:
        return self.tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.operation": name, "db.statement": sql},
        )

    def start_rpc_span(self, method: str, metadata: Any) -> tuple[Any, object]:
        """A server span for a non-blocking stream, current until detach_rpc_span()."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        service, _, name = method.lstrip("/").partition("/")
        span = self.tracer.start_span(
            method,
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def end_rpc_span(span: Any, code: grpc.StatusCode) -> None:
        set_status(span, code)
        span.end()

    @staticmethod
    def current_status(code: grpc.StatusCode) -> None:
        set_status(trace.get_current_span(), code)

    @staticmethod
    def trace_id() -> str | None:
        span_context = trace.get_current_span().get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else None

    def shutdown(self) -> None:
        if self.owned:
            self.provider.shutdown()


def set_status(span: Any, code: grpc.StatusCode) -> None:
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code.name))

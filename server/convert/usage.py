"""Usage between protobuf and storage: events (the ledger and the call log), months, filters.

Kept apart from the servicer so handlers stay thin. Limits come from storage/models/usage.py.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from blogstore.v1 import usage_pb2
from google.protobuf import json_format, struct_pb2

from server.protoconv import datetime_or_none, timestamp
from server.validation import Violations, list_owner, optional_uuid, parse_uuid, text_field
from storage.actors import Actor
from storage.errors import InvalidArgument
from storage.models.usage import EVENT_TEXT_LIMITS as LIMITS
from storage.models.usage import MAX_DURATION_MS, MAX_PARAMETERS_BYTES
from storage.repositories.usage import EventFilters, Limits, MonthTotals, month_of

COUNTS = (
    "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls",
)  # fmt: skip
_CALL_TEXTS = ("model", "operation", "prompt_name", "prompt_version")
_FUTURE_SLACK = dt.timedelta(minutes=5)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
STATUS_TO_PROTO = {
    "ok": usage_pb2.USAGE_STATUS_OK,
    "error": usage_pb2.USAGE_STATUS_ERROR,
    "timeout": usage_pb2.USAGE_STATUS_TIMEOUT,
    "rate_limited": usage_pb2.USAGE_STATUS_RATE_LIMITED,
}
STATUS_FROM_PROTO: dict[int, str] = {v: k for k, v in STATUS_TO_PROTO.items()}
_STATUS_NAMES = "OK, ERROR, TIMEOUT or RATE_LIMITED"
GROUP_BY = {
    usage_pb2.COST_REPORT_GROUP_BY_SERVICE: "service",
    usage_pb2.COST_REPORT_GROUP_BY_MODEL: "model",
    usage_pb2.COST_REPORT_GROUP_BY_DAY: "day",
    usage_pb2.COST_REPORT_GROUP_BY_USER: "user",
    usage_pb2.COST_REPORT_GROUP_BY_OPERATION: "operation",
    usage_pb2.COST_REPORT_GROUP_BY_STATUS: "status",
}
MAX_FULL_PAGE_SIZE = 100  # events with their texts (up to 2 x 256 KiB each) per List page


@dataclass(frozen=True)
class TextLog:
    """Whether RecordUsage keeps input_text and output_text, and their longest length
    (BLOGSTORE_USAGE_LOG_TEXT and BLOGSTORE_USAGE_LOG_TEXT_MAX_BYTES)."""

    enabled: bool
    max_bytes: int


def event_to_proto(e: Any, *, texts: bool = True) -> usage_pb2.UsageEvent:
    """A UsageEvent from an ORM row or a RecordUsage answer (storage/usage_batch.py); `texts`
    False leaves the texts out (and never reads them: List loads them only for the FULL view)."""
    event = usage_pb2.UsageEvent(
        id=str(e.id),
        user_id=str(e.user_id),
        pipeline_id=str(e.pipeline_id or ""),
        article_id=str(e.article_id or ""),
        service=e.service,
        model=e.model,
        operation=e.operation,
        request_id=str(e.request_id),
        event_time=timestamp(e.event_time),
        create_time=timestamp(e.create_time),
        status=STATUS_TO_PROTO[e.status],
        error_message=e.error_message,
        prompt_name=e.prompt_name,
        prompt_version=e.prompt_version,
        **{name: getattr(e, name) for name in COUNTS},
    )
    if e.duration_ms is not None:
        event.duration_ms = e.duration_ms
    if e.parameters:
        event.parameters.update(e.parameters)
    if texts:
        event.input_text = e.input_text or ""
        event.output_text = e.output_text or ""
    return event


def month_to_proto(totals: MonthTotals, limits: Limits) -> usage_pb2.MonthlyUsage:
    return usage_pb2.MonthlyUsage(
        user_id=str(totals.user_id),
        month=f"{totals.month:%Y-%m}",
        articles_generated=totals.articles_generated,
        cost_micros=totals.cost_micros,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        api_calls=totals.api_calls,
        event_count=totals.event_count,
        cost_limit_micros=limits.cost_micros,
        article_limit=limits.articles,
        remaining_cost_micros=max(limits.cost_micros - totals.cost_micros, 0),
        remaining_articles=max(limits.articles - totals.articles_generated, 0),
    )


def parse_month(value: str) -> dt.date:
    if not value:
        return month_of(dt.datetime.now(dt.UTC))
    match = _MONTH.match(value)
    if not match or not 1 <= int(match[2]) <= 12:
        raise InvalidArgument({"month": "must be YYYY-MM"})
    return dt.date(int(match[1]), int(match[2]), 1)


def record_values(
    request: usage_pb2.RecordUsageRequest, user_id: uuid.UUID, text_log: TextLog
) -> dict[str, Any]:
    """The event's column values (storage/usage_batch.py), every field checked."""
    v = Violations()
    values: dict[str, Any] = {
        "user_id": user_id,
        "request_id": v.collect(parse_uuid, "request_id", request.request_id),
        "service": text_field(v, "service", request.service, max_length=LIMITS["service"]),
        **{
            name: text_field(
                v, name, getattr(request, name), max_length=LIMITS[name], required=False
            )
            for name in (*_CALL_TEXTS, "error_message")
        },
    }
    for name in COUNTS:
        values[name] = getattr(request, name)
        v.check(values[name] >= 0, name, "must not be negative")
    for name in ("pipeline_id", "article_id"):
        values[name] = v.collect(optional_uuid, name, getattr(request, name))
    status = values["status"] = STATUS_FROM_PROTO.get(request.status or usage_pb2.USAGE_STATUS_OK)
    v.check(status is not None, "status", f"must be {_STATUS_NAMES}")
    if status not in (None, "ok"):  # a failed call never counts against the article limit
        v.check(values["articles_generated"] == 0, "articles_generated",
                "must be 0 when status is not OK")  # fmt: skip
    values["duration_ms"] = request.duration_ms if request.HasField("duration_ms") else None
    v.check(
        values["duration_ms"] is None or 0 <= values["duration_ms"] <= MAX_DURATION_MS,
        "duration_ms",
        f"must be between 0 and {MAX_DURATION_MS}",
    )
    values["parameters"] = _parameters(v, request.parameters)
    for name in ("input_text", "output_text"):  # kept only when configured; cut, never refused
        text = getattr(request, name)
        values[name] = _cut(text, text_log.max_bytes) if text_log.enabled and text else None
    now = dt.datetime.now(dt.UTC)
    event_time = datetime_or_none(request, "event_time") or now
    v.check(event_time <= now + _FUTURE_SLACK, "event_time", "must not lie in the future")
    v.raise_if_any()
    values.update(event_time=event_time, month=month_of(event_time))
    return values


def _parameters(v: Violations, message: struct_pb2.Struct) -> dict[str, Any] | None:
    """The jsonb value, or None when empty. (NaN, depth and NUL are refused for every
    request by server/validation.py check_request.)"""
    if not message.fields:
        return None
    if message.ByteSize() > MAX_PARAMETERS_BYTES:
        v.add("parameters", f"must be at most {MAX_PARAMETERS_BYTES} bytes")
        return None
    return json_format.MessageToDict(message)


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes of UTF-8, never inside a character."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode(errors="ignore")  # only the last character can be partial


def event_filters(request: Any, actor: Actor) -> EventFilters:
    """ListUsageEvents' and GetCostReport's filters (the report has the common ones only)."""
    status = getattr(request, "status", 0)
    if status and status not in STATUS_FROM_PROTO:
        raise InvalidArgument({"status": f"must be {_STATUS_NAMES}, or UNSPECIFIED for any"})
    text = {name: getattr(request, name, "").strip() or None
            for name in ("service", "model", "operation", "prompt_name")}  # fmt: skip
    return EventFilters(
        user_id=list_owner("user_id", request.user_id, actor),
        pipeline_id=optional_uuid("pipeline_id", getattr(request, "pipeline_id", "")),
        start_time=datetime_or_none(request, "start_time"),
        end_time=datetime_or_none(request, "end_time"),
        status=STATUS_FROM_PROTO.get(status),
        **text,
    )


def wants_texts(view: int) -> bool:
    if view not in (0, usage_pb2.USAGE_EVENT_VIEW_BASIC, usage_pb2.USAGE_EVENT_VIEW_FULL):
        raise InvalidArgument({"view": "must be BASIC or FULL"})
    return view == usage_pb2.USAGE_EVENT_VIEW_FULL


def report_row(row: Any) -> usage_pb2.CostReportRow:
    message = usage_pb2.CostReportRow(
        key=row.key, cost_micros=row.cost_micros, input_tokens=row.input_tokens,
        output_tokens=row.output_tokens, event_count=row.event_count,
    )  # fmt: skip
    if row.p50_duration_ms is not None:
        message.p50_duration_ms = row.p50_duration_ms
        message.p95_duration_ms = row.p95_duration_ms
    return message

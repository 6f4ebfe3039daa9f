"""UsageService: the cost ledger, monthly totals and limits, and cost reports."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import grpc
from blogstore.v1 import usage_pb2, usage_pb2_grpc

from server.context import current_caller
from server.paging import PageTokens, filter_key
from server.protoconv import datetime_or_none, timestamp
from server.validation import (
    Violations,
    list_owner,
    optional_uuid,
    owner_id,
    page_size,
    parse_uuid,
    text_field,
)
from storage.actors import Actor
from storage.errors import InvalidArgument, PermissionDenied
from storage.models import UsageEvent
from storage.models.usage import EVENT_TEXT_LIMITS as _LIMITS
from storage.queries import record_usage
from storage.repositories.usage import EventFilters, Limits, MonthTotals, month_of
from storage.uow import Database

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_COUNTS = (
    "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls",
)  # fmt: skip
_FUTURE_SLACK = dt.timedelta(minutes=5)
GROUP_BY = {
    usage_pb2.COST_REPORT_GROUP_BY_SERVICE: "service",
    usage_pb2.COST_REPORT_GROUP_BY_MODEL: "model",
    usage_pb2.COST_REPORT_GROUP_BY_DAY: "day",
    usage_pb2.COST_REPORT_GROUP_BY_USER: "user",
}


def event_to_proto(e: UsageEvent) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
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
        **{name: getattr(e, name) for name in _COUNTS},
    )


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


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, db: Database, page_tokens: PageTokens, *, default_limits: Limits) -> None:
        self.db = db
        self.page_tokens = page_tokens
        self.default_limits = default_limits

    def _limits(self, tx, user_id: uuid.UUID) -> Limits:
        return self._effective(*tx.usage.limits_override(user_id))

    def _effective(self, cost: int | None, articles: int | None) -> Limits:
        """The limits in force: a user's own, else the configured defaults."""
        return Limits(
            cost_micros=cost or self.default_limits.cost_micros,
            articles=articles or self.default_limits.articles,
        )

    def RecordUsage(
        self, request: usage_pb2.RecordUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.RecordUsageResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        v = Violations()
        request_id = v.collect(parse_uuid, "request_id", request.request_id)
        values: dict[str, Any] = {
            "user_id": user_id,
            "request_id": request_id,
            "service": text_field(v, "service", request.service, max_length=_LIMITS["service"]),
            "model": text_field(
                v, "model", request.model, max_length=_LIMITS["model"], required=False
            ),
            "operation": text_field(
                v, "operation", request.operation, max_length=_LIMITS["operation"], required=False
            ),
        }
        for name in _COUNTS:
            values[name] = getattr(request, name)
            v.check(values[name] >= 0, name, "must not be negative")
        for name in ("pipeline_id", "article_id"):
            values[name] = v.collect(optional_uuid, name, getattr(request, name))
        now = dt.datetime.now(dt.UTC)
        event_time = datetime_or_none(request, "event_time") or now
        v.check(event_time <= now + _FUTURE_SLACK, "event_time", "must not lie in the future")
        v.raise_if_any()
        values.update(event_time=event_time, month=month_of(event_time))

        defaults = (self.default_limits.cost_micros, self.default_limits.articles)
        row = record_usage(self.db, caller, values, defaults)
        totals = MonthTotals(
            row.user_id, row.month, row.month_cost_micros, row.month_articles_generated,
            row.month_input_tokens, row.month_output_tokens, row.month_api_calls,
            row.month_event_count,
        )  # fmt: skip
        limits = Limits(row.cost_limit_micros, row.article_limit)
        return usage_pb2.RecordUsageResponse(
            event=event_to_proto(row), usage=month_to_proto(totals, limits)
        )

    def CheckQuota(
        self, request: usage_pb2.CheckQuotaRequest, context: grpc.ServicerContext
    ) -> usage_pb2.CheckQuotaResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        v = Violations()
        v.check(request.cost_micros >= 0, "cost_micros", "must not be negative")
        v.check(request.articles >= 0, "articles", "must not be negative")
        v.raise_if_any()
        month = month_of(dt.datetime.now(dt.UTC))

        def check(tx):
            tx.users.require_visible({user_id})
            return tx.usage.month(user_id, month), self._limits(tx, user_id)

        totals, limits = self.db.run(caller, check)
        allowed = (
            totals.cost_micros + request.cost_micros <= limits.cost_micros
            and totals.articles_generated + request.articles <= limits.articles
        )
        return usage_pb2.CheckQuotaResponse(allowed=allowed, usage=month_to_proto(totals, limits))

    def GetMonthlyUsage(
        self, request: usage_pb2.GetMonthlyUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetMonthlyUsageResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        month = parse_month(request.month)

        def get(tx):
            tx.users.require_visible({user_id})
            return tx.usage.month(user_id, month), self._limits(tx, user_id)

        totals, limits = self.db.run(caller, get)
        return usage_pb2.GetMonthlyUsageResponse(usage=month_to_proto(totals, limits))

    def ListMonthlyUsage(
        self, request: usage_pb2.ListMonthlyUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListMonthlyUsageResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        limit = page_size(request.page_size)
        key = {"user_id": str(user_id)}
        after = self.page_tokens.decode(request.page_token, key)

        def list_months(tx):
            tx.users.require_visible({user_id})
            return tx.usage.list_months(user_id, after=after, limit=limit), self._limits(
                tx, user_id
            )

        page, limits = self.db.run(caller, list_months)
        return usage_pb2.ListMonthlyUsageResponse(
            usage=[month_to_proto(m, limits) for m in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def ListUsageEvents(
        self, request: usage_pb2.ListUsageEventsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListUsageEventsResponse:
        caller = current_caller()
        filters = self._filters(request, caller.actor)
        limit = page_size(request.page_size)
        key = filter_key(filters)
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.run(
            caller, lambda tx: tx.usage.list_events(filters, after=after, limit=limit)
        )
        return usage_pb2.ListUsageEventsResponse(
            events=[event_to_proto(e) for e in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def GetCostReport(
        self, request: usage_pb2.GetCostReportRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetCostReportResponse:
        caller = current_caller()
        v = Violations()
        v.check(request.HasField("start_time"), "start_time", "is required")
        v.check(request.HasField("end_time"), "end_time", "is required")
        v.check(request.group_by in GROUP_BY, "group_by", "must be SERVICE, MODEL, DAY or USER")
        v.raise_if_any()
        filters = self._filters(request, caller.actor)
        if filters.start_time and filters.end_time and filters.start_time >= filters.end_time:
            raise InvalidArgument({"end_time": "must be after start_time"})
        rows, total = self.db.run(
            caller, lambda tx: tx.usage.cost_report(filters, GROUP_BY[request.group_by])
        )
        return usage_pb2.GetCostReportResponse(
            rows=[usage_pb2.CostReportRow(**vars(row)) for row in rows], total_cost_micros=total
        )

    def GetUsageLimits(
        self, request: usage_pb2.GetUsageLimitsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageLimitsResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)

        def get(tx):
            tx.users.require_visible({user_id})
            return tx.usage.limits_override(user_id)

        cost, articles = self.db.run(caller, get)
        return usage_pb2.GetUsageLimitsResponse(limits=self._limits_proto(user_id, cost, articles))

    def SetUsageLimits(
        self, request: usage_pb2.SetUsageLimitsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.SetUsageLimitsResponse:
        caller = current_caller()
        if not caller.actor.is_privileged:
            raise PermissionDenied("only admin or service principals may set usage limits")
        user_id = parse_uuid("limits.user_id", request.limits.user_id)
        v = Violations()
        v.check(
            request.limits.cost_limit_micros >= 0,
            "limits.cost_limit_micros",
            "must not be negative",
        )
        v.check(request.limits.article_limit >= 0, "limits.article_limit", "must not be negative")
        v.raise_if_any()
        cost = request.limits.cost_limit_micros or None
        articles = request.limits.article_limit or None

        def set_limits(tx):
            tx.users.require_visible({user_id})
            tx.usage.set_limits(user_id, cost, articles)
            tx.audit(
                "usage.set_limits", "user", user_id, cost_limit_micros=cost, article_limit=articles
            )

        self.db.run(caller, set_limits)
        return usage_pb2.SetUsageLimitsResponse(limits=self._limits_proto(user_id, cost, articles))

    def _limits_proto(self, user_id, cost, articles) -> usage_pb2.UsageLimits:
        effective = self._effective(cost, articles)
        return usage_pb2.UsageLimits(
            user_id=str(user_id),
            cost_limit_micros=cost or 0,
            article_limit=articles or 0,
            effective_cost_limit_micros=effective.cost_micros,
            effective_article_limit=effective.articles,
        )

    def _filters(self, request, actor: Actor) -> EventFilters:
        filters = EventFilters(
            user_id=list_owner("user_id", request.user_id, actor),
            pipeline_id=optional_uuid("pipeline_id", getattr(request, "pipeline_id", "")),
            service=getattr(request, "service", "").strip() or None,
            start_time=datetime_or_none(request, "start_time"),
            end_time=datetime_or_none(request, "end_time"),
        )
        return filters

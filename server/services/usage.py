"""UsageService: the cost ledger, monthly totals and limits, and cost reports."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable

import grpc
from blogstore.v1 import usage_pb2, usage_pb2_grpc

from server.context import current_caller
from server.convert.usage import (
    GROUP_BY,
    MAX_FULL_PAGE_SIZE,
    TextLog,
    event_filters,
    event_to_proto,
    month_to_proto,
    parse_month,
    record_values,
    report_row,
    wants_texts,
)
from server.paging import PageTokens, filter_key
from server.validation import Violations, owner_id, page_size, parse_uuid
from storage.errors import InvalidArgument, PermissionDenied
from storage.replicas import note_commit
from storage.repositories.usage import Limits, month_of
from storage.uow import Database
from storage.usage_batch import Recorded, Slots, UsageRecorder


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(
        self, db: Database, page_tokens: PageTokens, *, default_limits: Limits,
        text_log: TextLog, group_wait_ms: int = 0, threads: int = 16,
        calls: Slots | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.page_tokens = page_tokens
        self.default_limits = default_limits
        self.text_log = text_log
        defaults = (default_limits.cost_micros, default_limits.articles)
        self.recorder = UsageRecorder(db, defaults, group_wait_ms / 1000, threads, calls)

    def _limits(self, tx, user_id: uuid.UUID) -> Limits:
        return self._effective(*tx.usage.limits_override(user_id))

    def _effective(self, cost: int | None, articles: int | None) -> Limits:
        """The limits in force: a user's own, else the configured defaults."""
        return Limits(
            cost_micros=cost or self.default_limits.cost_micros,
            articles=articles or self.default_limits.articles,
        )

    def RecordUsage(
        self,
        request: usage_pb2.RecordUsageRequest,
        context: grpc.ServicerContext,
        reply: Callable[[usage_pb2.RecordUsageResponse | BaseException], None],
    ) -> None:
        """Deferred (server/interceptors.py): the thread that records the call's group sends
        its answer, so a call waiting for its group holds no request thread, and a group's
        answers leave one after another with no thread to wake for each."""
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        values = record_values(request, user_id, self.text_log)
        self.recorder.submit(caller, values, functools.partial(_answer, reply))

    RecordUsage.deferred_reply = True  # type: ignore[attr-defined]

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

        totals, limits = self.db.read(caller, get)
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

        page, limits = self.db.read(caller, list_months)
        return usage_pb2.ListMonthlyUsageResponse(
            usage=[month_to_proto(m, limits) for m in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def ListUsageEvents(
        self, request: usage_pb2.ListUsageEventsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListUsageEventsResponse:
        caller = current_caller()
        filters = event_filters(request, caller.actor)
        texts = wants_texts(request.view)
        limit = page_size(request.page_size)
        limit = min(limit, MAX_FULL_PAGE_SIZE) if texts else limit
        key = filter_key(filters)  # a FULL token pages a BASIC listing alike
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.read(
            caller,
            lambda tx: tx.usage.list_events(filters, after=after, limit=limit, texts=texts),
        )
        return usage_pb2.ListUsageEventsResponse(
            events=[event_to_proto(e, texts=texts) for e in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def GetCostReport(
        self, request: usage_pb2.GetCostReportRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetCostReportResponse:
        caller = current_caller()
        v = Violations()
        v.check(request.HasField("start_time"), "start_time", "is required")
        v.check(request.HasField("end_time"), "end_time", "is required")
        v.check(
            request.group_by in GROUP_BY,
            "group_by",
            "must be SERVICE, MODEL, DAY, USER, OPERATION or STATUS",
        )
        v.raise_if_any()
        filters = event_filters(request, caller.actor)
        if filters.start_time and filters.end_time and filters.start_time >= filters.end_time:
            raise InvalidArgument({"end_time": "must be after start_time"})
        rows, total = self.db.read(
            caller, lambda tx: tx.usage.cost_report(filters, GROUP_BY[request.group_by])
        )
        return usage_pb2.GetCostReportResponse(
            rows=[report_row(row) for row in rows], total_cost_micros=total
        )

    def GetUsageLimits(
        self, request: usage_pb2.GetUsageLimitsRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageLimitsResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)

        def get(tx):
            tx.users.require_visible({user_id})
            return tx.usage.limits_override(user_id)

        cost, articles = self.db.read(caller, get)
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


def _answer(
    reply: Callable[[usage_pb2.RecordUsageResponse | BaseException], None],
    outcome: Recorded | BaseException,
) -> None:
    """RecordUsage's answer from the recorder's outcome (run in the call's own context)."""
    if isinstance(outcome, BaseException):
        reply(outcome)
        return
    if outcome.lsn is not None:
        note_commit(outcome.lsn)  # the reply's consistency token
    reply(
        usage_pb2.RecordUsageResponse(
            event=event_to_proto(outcome.event),
            usage=month_to_proto(outcome.totals, outcome.limits),
        )
    )

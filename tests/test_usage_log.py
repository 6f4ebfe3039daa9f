"""The LLM and API call log: a usage event is also the record of the call that cost it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid

import grpc
import pytest
from blogstore import client
from blogstore.v1 import usage_pb2, usage_pb2_grpc
from google.protobuf import struct_pb2, timestamp_pb2
from sqlalchemy import text

from storage.engine import make_engine
from storage.lifecycle import retention
from storage.uow import Database
from tests import support
from tests.support import SERVICE_KEY, details_of, status_of

Code = grpc.StatusCode
Group = usage_pb2.CostReportGroupBy
Status = usage_pb2.UsageStatus
FULL = usage_pb2.USAGE_EVENT_VIEW_FULL


def ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


@pytest.fixture(scope="module")
def service(connect):
    return usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))


@pytest.fixture
def account(new_account, connect):
    a = new_account()
    a.usage = usage_pb2_grpc.UsageServiceStub(connect(a.token))
    return a


def request(user_id: str, **fields) -> usage_pb2.RecordUsageRequest:
    values = {"request_id": str(uuid.uuid4()), "service": "openai", "model": "gpt-4o", **fields}
    return usage_pb2.RecordUsageRequest(user_id=user_id, **values)


def record(stub, user_id: str, **fields) -> usage_pb2.RecordUsageResponse:
    return stub.RecordUsage(request(user_id, **fields))


def events(stub, **filters) -> list[usage_pb2.UsageEvent]:
    return list(stub.ListUsageEvents(usage_pb2.ListUsageEventsRequest(**filters)).events)


def month(stub, user_id: str) -> usage_pb2.MonthlyUsage:
    return stub.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=user_id)).usage


def test_call_fields_round_trip_and_a_retry_returns_the_first(account, service):
    call = request(
        account.id, operation="draft", duration_ms=1234, status=Status.USAGE_STATUS_OK,
        prompt_name="article-draft", prompt_version="v7", cost_micros=900,
        parameters=struct(temperature=0.7, max_tokens=2000, stop=["\n\n"], json=True),
        error_message="retried once after a 502",
    )  # fmt: skip
    event = service.RecordUsage(call).event
    assert (event.duration_ms, event.status) == (1234, Status.USAGE_STATUS_OK)
    assert (event.prompt_name, event.prompt_version) == ("article-draft", "v7")
    assert event.error_message == "retried once after a 502"
    assert event.parameters == call.parameters
    assert event.parameters["stop"] == ["\n\n"] and event.parameters["json"] is True
    listed = events(account.usage)
    assert listed == [event]
    # A retry (same request_id, same money) with other call details gets the first event.
    retry = usage_pb2.RecordUsageRequest()
    retry.CopyFrom(call)
    retry.duration_ms, retry.prompt_version = 99, "v8"
    retry.parameters.Clear()
    again = service.RecordUsage(retry)
    assert again.event == event and again.usage.event_count == 1
    # A status is part of the event: the same request_id with another status is refused.
    retry.status = Status.USAGE_STATUS_ERROR
    error = details_of(lambda: service.RecordUsage(retry))
    assert error.code is Code.INVALID_ARGUMENT and "request_id" in error.field_violations


def test_status_defaults_to_ok_and_duration_to_unset(account):
    event = record(account.usage, "", cost_micros=1).event
    assert event.status == Status.USAGE_STATUS_OK
    assert not event.HasField("duration_ms") and not event.parameters.fields
    assert event.error_message == event.prompt_name == event.input_text == ""
    zero = record(account.usage, "", duration_ms=0).event
    assert zero.HasField("duration_ms") and zero.duration_ms == 0


def test_failed_calls_count_their_cost_but_never_articles(account, service):
    limits = usage_pb2.UsageLimits(user_id=account.id, cost_limit_micros=10_000, article_limit=2)
    service.SetUsageLimits(usage_pb2.SetUsageLimitsRequest(limits=limits))
    record(service, account.id, cost_micros=1_000, articles_generated=2)
    failed = (Status.USAGE_STATUS_ERROR, Status.USAGE_STATUS_TIMEOUT,
              Status.USAGE_STATUS_RATE_LIMITED)  # fmt: skip
    for status in failed:  # the month is at its article limit: failed calls still go in
        response = record(service, account.id, cost_micros=2_000, status=status,
                          error_message="upstream said no")  # fmt: skip
        assert response.event.status == status
    usage = month(service, account.id)
    assert (usage.cost_micros, usage.articles_generated, usage.event_count) == (7_000, 2, 4)
    # Lowered below what the month holds, the article limit still never stops a call that
    # adds no article, failed or not.
    limits.article_limit = 1
    service.SetUsageLimits(usage_pb2.SetUsageLimitsRequest(limits=limits))
    record(service, account.id, cost_micros=500, status=Status.USAGE_STATUS_ERROR)
    record(service, account.id, cost_micros=500)
    over = details_of(lambda: record(service, account.id, articles_generated=1))
    assert over.code is Code.RESOURCE_EXHAUSTED
    assert [s for s, _ in over.quota_violations] == [
        f"user:{account.id}/month:{usage.month}/articles"
    ]
    # A failed call's cost counts against the cost limit as any other.
    spent = month(service, account.id).cost_micros
    assert spent == 8_000
    error = details_of(
        lambda: record(service, account.id, cost_micros=2_001, status=Status.USAGE_STATUS_ERROR)
    )
    assert error.code is Code.RESOURCE_EXHAUSTED
    assert [s.rsplit("/", 1)[1] for s, _ in error.quota_violations] == ["cost_micros"]
    assert month(service, account.id).event_count == 6


def test_articles_from_a_failed_call_are_refused(account, service):
    for status in (Status.USAGE_STATUS_ERROR, Status.USAGE_STATUS_TIMEOUT,
                   Status.USAGE_STATUS_RATE_LIMITED):  # fmt: skip
        error = details_of(
            lambda status=status: record(service, account.id, status=status, articles_generated=1)
        )
        assert error.code is Code.INVALID_ARGUMENT
        assert list(error.field_violations) == ["articles_generated"]
    assert month(service, account.id).event_count == 0


def test_the_database_refuses_articles_from_a_failed_call_too(account, owner_engine):
    """The CHECK behind the rule: no writer can store articles on a failed event."""
    with pytest.raises(Exception, match="failed_call_no_articles"), owner_engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO usage_events (user_id, service, request_id, event_time, month,"
                " status, articles_generated) VALUES (:user, 'openai', gen_random_uuid(), now(),"
                " date_trunc('month', now() AT TIME ZONE 'UTC')::date, 'error', 1)"
            ),
            {"user": account.id},
        )


def test_texts_are_dropped_while_text_logging_is_off(account, owner_engine):
    event = record(account.usage, "", input_text="the prompt", output_text="the answer").event
    assert event.input_text == event.output_text == ""
    assert events(account.usage, view=FULL)[0].input_text == ""
    with owner_engine.connect() as c:
        stored = c.execute(
            text("SELECT input_text, output_text FROM usage_events WHERE id = :id"),
            {"id": event.id},
        ).one()
    assert tuple(stored) == (None, None)


@pytest.fixture
def logging_app(started, database_url):
    """A second server on the same database that keeps texts, cut to 10 bytes."""
    app = support.start_app(started, database_url, usage_log_text=True,
                            usage_log_text_max_bytes=10)  # fmt: skip
    channel = client.connect(f"127.0.0.1:{app.port}", SERVICE_KEY, default_timeout=30)
    yield usage_pb2_grpc.UsageServiceStub(channel)
    channel.close()


def test_texts_are_kept_and_cut_at_a_character_boundary_when_on(account, logging_app):
    prompt = "abcdefgh€x"  # '€' is 3 bytes: bytes 9-11, so 10 bytes end before it
    event = record(logging_app, account.id, input_text=prompt, output_text="short").event
    assert (event.input_text, event.output_text) == ("abcdefgh", "short")
    assert len(event.input_text.encode()) <= 10
    emoji = record(logging_app, account.id, input_text="😀😀😀").event  # 4 bytes each
    assert emoji.input_text == "😀😀"
    full = {e.id: e for e in events(account.usage, view=FULL)}
    assert (full[event.id].input_text, full[event.id].output_text) == ("abcdefgh", "short")
    basic = {e.id: e for e in events(account.usage)}
    assert basic[event.id].input_text == "" and basic[event.id].output_text == ""
    assert basic[event.id].model == "gpt-4o"


def test_retention_clears_old_texts_and_keeps_the_events(account, logging_app, database_url):
    now = dt.datetime.now(dt.UTC)
    old = record(logging_app, account.id, input_text="old prompt", output_text="old answer",
                 cost_micros=77, event_time=ts(now - dt.timedelta(days=40))).event  # fmt: skip
    new = record(logging_app, account.id, input_text="new prompt",
                 event_time=ts(now - dt.timedelta(days=2))).event  # fmt: skip
    off = retention.Policies(*([0] * (len(dataclasses.fields(retention.Policies)) - 1)))
    policies = dataclasses.replace(off, usage_text_days=30)
    db = Database(make_engine(database_url, pool_size=1), statement_timeout_ms=30_000)
    try:
        planned = retention.plan(db, policies).counts()
        assert planned["usage_texts"] >= 1  # other tests' old texts may be there too
        report = retention.apply(db, policies, batch_size=1, lock_timeout_ms=200)
        assert report.complete and report.counts()["usage_texts"] == planned["usage_texts"]
        assert retention.plan(db, policies).counts()["usage_texts"] == 0
    finally:
        db.dispose()
    after = {e.id: e for e in events(account.usage, view=FULL)}
    assert (after[old.id].input_text, after[old.id].output_text) == ("", "")
    assert after[old.id].cost_micros == 77 and after[old.id].model == old.model
    assert after[new.id].input_text == "new prompt"


def test_list_filters_by_model_status_operation_and_prompt(account, service):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    combos = [
        (model, status, operation, prompt)
        for model in ("gpt-4o", "claude")
        for status in (Status.USAGE_STATUS_OK, Status.USAGE_STATUS_ERROR)
        for operation in ("draft", "outline")
        for prompt in ("p1", "p2")
    ]
    for i, (model, status, operation, prompt) in enumerate(combos):
        record(service, account.id, model=model, status=status, operation=operation,
               prompt_name=prompt, event_time=ts(start + dt.timedelta(seconds=i)))  # fmt: skip

    def listed(**filters):
        return [(e.model, e.status, e.operation, e.prompt_name)
                for e in events(account.usage, page_size=100, **filters)]  # fmt: skip

    assert len(listed()) == 16
    assert {c[0] for c in listed(model="claude")} == {"claude"} and len(listed(model="claude")) == 8
    errors = listed(status=Status.USAGE_STATUS_ERROR)
    assert len(errors) == 8 and {c[1] for c in errors} == {Status.USAGE_STATUS_ERROR}
    assert len(listed(operation="outline")) == 8 and len(listed(prompt_name="p2")) == 8
    one = listed(model="gpt-4o", status=Status.USAGE_STATUS_ERROR, operation="draft",
                 prompt_name="p1")  # fmt: skip
    assert one == [("gpt-4o", Status.USAGE_STATUS_ERROR, "draft", "p1")]
    assert listed(status=Status.USAGE_STATUS_TIMEOUT) == [] and listed(model="nope") == []
    # Keyset pages under filters, newest first, none lost or repeated.
    seen, token = [], ""
    while True:
        page = account.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest(
            model="claude", status=Status.USAGE_STATUS_ERROR, page_size=3, page_token=token,
        ))  # fmt: skip
        seen += [(e.event_time.ToDatetime(), e.id) for e in page.events]
        assert all(e.model == "claude" and e.status == Status.USAGE_STATUS_ERROR
                   for e in page.events)  # fmt: skip
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4 and seen == sorted(seen, reverse=True)
    first = account.usage.ListUsageEvents(
        usage_pb2.ListUsageEventsRequest(model="claude", page_size=2)
    )
    reused = usage_pb2.ListUsageEventsRequest(model="gpt-4o", page_token=first.next_page_token)
    error = details_of(lambda: account.usage.ListUsageEvents(reused))
    assert error.code is Code.INVALID_ARGUMENT and "page_token" in error.field_violations


def percentile_disc(values: list[int], fraction: float) -> int:
    """PostgreSQL's percentile_disc: the first value whose cumulative share reaches fraction."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def test_cost_report_by_operation_and_status_with_duration_percentiles(account, service):
    start = dt.datetime(2025, 3, 10, tzinfo=dt.UTC)
    calls = []  # (operation, status, duration or None, cost)
    for i in range(37):
        status = (Status.USAGE_STATUS_OK, Status.USAGE_STATUS_ERROR,
                  Status.USAGE_STATUS_TIMEOUT)[i % 3]  # fmt: skip
        calls.append(("draft" if i % 2 else "outline", status, (i * 7919) % 3001, 100 + i))
    calls.append(("fact_check", Status.USAGE_STATUS_RATE_LIMITED, None, 5))  # no duration
    calls.append(("draft", Status.USAGE_STATUS_OK, None, 1))  # left out of draft's percentiles
    for i, (operation, status, duration, cost) in enumerate(calls):
        fields = {"duration_ms": duration} if duration is not None else {}
        record(service, account.id, operation=operation, status=status, cost_micros=cost,
               event_time=ts(start + dt.timedelta(minutes=i)), **fields)  # fmt: skip
    names = {v: k for k, v in Status.items()}
    key_of = {
        Group.COST_REPORT_GROUP_BY_OPERATION: lambda c: c[0],
        Group.COST_REPORT_GROUP_BY_STATUS: lambda c: names[c[1]],
        Group.COST_REPORT_GROUP_BY_DAY: lambda c: "2025-03-10",
        Group.COST_REPORT_GROUP_BY_SERVICE: lambda c: "openai",
        Group.COST_REPORT_GROUP_BY_MODEL: lambda c: "gpt-4o",
        Group.COST_REPORT_GROUP_BY_USER: lambda c: account.id,
    }
    for group_by, key in key_of.items():
        report = service.GetCostReport(usage_pb2.GetCostReportRequest(
            start_time=ts(start), end_time=ts(start + dt.timedelta(days=1)),
            user_id=account.id, group_by=group_by,
        ))  # fmt: skip
        expected = {}
        for call in calls:
            expected.setdefault(key(call), []).append(call)
        assert {r.key for r in report.rows} == set(expected), group_by
        for row in report.rows:
            group = expected[row.key]
            durations = [c[2] for c in group if c[2] is not None]
            assert (row.event_count, row.cost_micros) == (len(group), sum(c[3] for c in group))
            if durations:
                assert row.p50_duration_ms == percentile_disc(durations, 0.5), (group_by, row.key)
                assert row.p95_duration_ms == percentile_disc(durations, 0.95), (group_by, row.key)
            else:
                assert not row.HasField("p50_duration_ms") and not row.HasField("p95_duration_ms")
        assert report.total_cost_micros == sum(c[3] for c in calls)
    statuses = {"USAGE_STATUS_OK", "USAGE_STATUS_ERROR", "USAGE_STATUS_TIMEOUT",
                "USAGE_STATUS_RATE_LIMITED"}  # fmt: skip
    by_status = service.GetCostReport(usage_pb2.GetCostReportRequest(
        start_time=ts(start), end_time=ts(start + dt.timedelta(days=1)), user_id=account.id,
        group_by=Group.COST_REPORT_GROUP_BY_STATUS,
    ))  # fmt: skip
    assert {r.key for r in by_status.rows} == statuses
    assert all(Status.Value(r.key) for r in by_status.rows)  # keys parse as UsageStatus names


BOUNDS = {
    "duration_ms": [{"duration_ms": -1}, {"duration_ms": 86_400_001}],
    "status": [{"status": 99}],
    "error_message": [{"error_message": "x" * 2001}],
    "prompt_name": [{"prompt_name": "p" * 101}],
    "prompt_version": [{"prompt_version": "v" * 101}],
    "parameters": [
        {"parameters": struct(blob="x" * 16 * 1024)},
        {"parameters": struct(bad=float("nan"))},
    ],
}


@pytest.mark.parametrize(
    "field, values", [(f, v) for f, cases in BOUNDS.items() for v in cases],
    ids=lambda x: x if isinstance(x, str) else "",
)  # fmt: skip
def test_every_new_field_is_bounded(account, service, field, values):
    error = details_of(lambda: record(service, account.id, **values))
    assert error.code is Code.INVALID_ARGUMENT
    assert any(name.split(".")[0] == field for name in error.field_violations), (
        error.field_violations
    )
    assert month(service, account.id).event_count == 0


def test_bounds_at_their_limits_pass(account, service):
    event = record(
        service, account.id, duration_ms=86_400_000, error_message="é" * 2000,
        prompt_name="p" * 100, prompt_version="v" * 100,
        parameters=struct(blob="x" * (16 * 1024 - 20)), status=Status.USAGE_STATUS_TIMEOUT,
    ).event  # fmt: skip
    assert event.duration_ms == 86_400_000 and len(event.error_message) == 2000


def test_list_filters_and_views_are_checked(account):
    for bad in ({"status": 42}, {"view": 9}):
        error = details_of(
            lambda bad=bad: account.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest(**bad))
        )
        assert error.code is Code.INVALID_ARGUMENT and set(error.field_violations) == set(bad)


def test_users_see_only_their_own_call_log(account, new_account, service):
    other = new_account()
    theirs = record(
        service, other.id, prompt_name="secret-prompt", status=Status.USAGE_STATUS_ERROR,
        error_message="their error",
    ).event  # fmt: skip
    record(service, account.id, prompt_name="secret-prompt", status=Status.USAGE_STATUS_ERROR)
    mine = events(account.usage, prompt_name="secret-prompt", view=FULL)
    assert len(mine) == 1 and mine[0].user_id == account.id and theirs.id != mine[0].id
    assert events(account.usage, status=Status.USAGE_STATUS_ERROR, view=FULL) == mine
    for call in (
        lambda: account.usage.ListUsageEvents(
            usage_pb2.ListUsageEventsRequest(user_id=other.id, prompt_name="secret-prompt")
        ),
        lambda: account.usage.GetCostReport(
            usage_pb2.GetCostReportRequest(
                start_time=ts(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
                end_time=ts(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
                user_id=other.id,
                group_by=Group.COST_REPORT_GROUP_BY_STATUS,
            )
        ),  # fmt: skip
    ):
        assert status_of(call) is Code.NOT_FOUND
    report = account.usage.GetCostReport(usage_pb2.GetCostReportRequest(
        start_time=ts(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        end_time=ts(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        group_by=Group.COST_REPORT_GROUP_BY_STATUS,
    ))  # fmt: skip
    assert [(r.key, r.event_count) for r in report.rows] == [("USAGE_STATUS_ERROR", 1)]

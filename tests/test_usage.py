"""UsageService: the money path. Exact, atomic, idempotent, isolated."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import pipelines_pb2, pipelines_pb2_grpc, usage_pb2, usage_pb2_grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from storage.engine import make_engine
from tests.support import SERVICE_KEY, details_of, status_of

Code = grpc.StatusCode
Group = usage_pb2.CostReportGroupBy


def ts(value: str) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromJsonString(value)
    return message


@pytest.fixture(scope="module")
def service(connect):
    return usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))


@pytest.fixture
def account(new_account, connect):
    a = new_account()
    a.usage = usage_pb2_grpc.UsageServiceStub(connect(a.token))
    return a


def record(stub, user_id: str, **fields) -> usage_pb2.RecordUsageResponse:
    values = {"request_id": str(uuid.uuid4()), "service": "openai", "model": "gpt-4o", **fields}
    return stub.RecordUsage(usage_pb2.RecordUsageRequest(user_id=user_id, **values))


def set_limits(stub, user_id: str, cost: int = 0, articles: int = 0) -> usage_pb2.UsageLimits:
    limits = usage_pb2.UsageLimits(user_id=user_id, cost_limit_micros=cost, article_limit=articles)
    return stub.SetUsageLimits(usage_pb2.SetUsageLimitsRequest(limits=limits)).limits


def test_defaults_come_from_configuration(account):
    usage = account.usage.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest()).usage
    assert (usage.cost_limit_micros, usage.article_limit) == (50_000_000, 100)
    assert usage.remaining_cost_micros == 50_000_000 and usage.cost_micros == 0
    assert usage.month == f"{dt.datetime.now(dt.UTC):%Y-%m}"


def test_record_updates_the_month(account):
    response = record(
        account.usage, "", cost_micros=1_234_567, input_tokens=100, output_tokens=50,
        api_calls=1, articles_generated=1, operation="draft",
    )  # fmt: skip
    assert response.event.cost_micros == 1_234_567 and response.event.user_id == account.id
    usage = response.usage
    assert (usage.cost_micros, usage.input_tokens, usage.output_tokens) == (1_234_567, 100, 50)
    assert usage.remaining_cost_micros == 50_000_000 - 1_234_567
    assert usage.remaining_articles == 99 and usage.event_count == 1


def test_fifty_writers_against_a_limit_that_fits_exactly_k(account, service, admin_users):
    cost, k = 1_000_003, 7
    set_limits(service, account.id, cost=cost * k)

    def attempt(_):
        try:
            record(service, account.id, cost_micros=cost)
            return Code.OK
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(attempt, range(50)))
    assert codes.count(Code.OK) == k
    assert codes.count(Code.RESOURCE_EXHAUSTED) == 50 - k
    usage = service.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=account.id)).usage
    assert usage.cost_micros == k * cost and usage.event_count == k
    events = service.ListUsageEvents(
        usage_pb2.ListUsageEventsRequest(user_id=account.id, page_size=100)
    ).events
    assert len(events) == k


def test_over_limit_is_resource_exhausted_with_quota_failure_and_writes_nothing(account, service):
    set_limits(service, account.id, cost=1_000_000, articles=2)
    record(service, account.id, cost_micros=600_000, articles_generated=2)
    error = details_of(lambda: record(service, account.id, cost_micros=500_000))
    assert error.code is Code.RESOURCE_EXHAUSTED and error.reason == "QUOTA_EXCEEDED"
    assert any("cost_micros" in subject for subject, _ in error.quota_violations)
    error = details_of(lambda: record(service, account.id, articles_generated=1))
    assert any("articles" in subject for subject, _ in error.quota_violations)
    usage = service.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=account.id)).usage
    assert (usage.cost_micros, usage.articles_generated, usage.event_count) == (600_000, 2, 1)
    fits = service.CheckQuota(usage_pb2.CheckQuotaRequest(user_id=account.id, cost_micros=400_000))
    assert fits.allowed and fits.usage.remaining_cost_micros == 400_000
    too_much = usage_pb2.CheckQuotaRequest(user_id=account.id, cost_micros=400_001)
    assert not service.CheckQuota(too_much).allowed
    assert not service.CheckQuota(
        usage_pb2.CheckQuotaRequest(user_id=account.id, articles=1)
    ).allowed


def test_twenty_concurrent_calls_with_one_request_id_write_one_event(account, service):
    request_id = str(uuid.uuid4())

    def attempt(_):
        return record(service, account.id, request_id=request_id, cost_micros=10).event.id

    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(attempt, range(20)))
    assert len(ids) == 1
    usage = service.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=account.id)).usage
    assert (usage.cost_micros, usage.event_count) == (10, 1)
    reused = usage_pb2.RecordUsageRequest(
        user_id=account.id, request_id=request_id, service="openai", cost_micros=11
    )
    assert status_of(lambda: service.RecordUsage(reused)) is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("moment", "month", "next_month"),
    [
        ("2026-01-31T23:59:59.999Z", "2026-01", "2026-02"),
        ("2026-02-28T23:59:59.999999Z", "2026-02", "2026-03"),
        ("2025-12-31T23:59:59.999Z", "2025-12", "2026-01"),
        ("2026-03-01T00:00:00Z", "2026-03", "2026-04"),
    ],
)
def test_month_boundaries_are_utc(account, service, moment, month, next_month):
    response = record(service, account.id, cost_micros=5, event_time=ts(moment))
    assert response.usage.month == month
    got = service.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=account.id, month=month))
    assert got.usage.cost_micros == 5
    later = usage_pb2.GetMonthlyUsageRequest(user_id=account.id, month=next_month)
    assert service.GetMonthlyUsage(later).usage.cost_micros == 0


def test_pipeline_totals_equal_the_sum_of_its_events(account, service, connect):
    pipelines = pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))
    pipeline = pipelines.CreatePipeline(pipelines_pb2.CreatePipelineRequest()).pipeline
    events = [(123_456, 10, 20, 1), (7, 0, 0, 3), (999_999, 1000, 2000, 0)]
    for cost, tokens_in, tokens_out, calls in events:
        record(
            service, account.id, pipeline_id=pipeline.id, cost_micros=cost,
            input_tokens=tokens_in, output_tokens=tokens_out, api_calls=calls,
        )  # fmt: skip
    got = pipelines.GetPipeline(pipelines_pb2.GetPipelineRequest(id=pipeline.id)).pipeline
    assert got.total_cost_micros == sum(e[0] for e in events)
    assert got.llm_tokens_used == sum(e[1] + e[2] for e in events)
    assert got.api_calls_made == sum(e[3] for e in events)
    listed = service.ListUsageEvents(usage_pb2.ListUsageEventsRequest(pipeline_id=pipeline.id))
    assert sum(e.cost_micros for e in listed.events) == got.total_cost_micros


def test_another_users_pipeline_or_article_is_not_found(account, new_account, connect):
    other = new_account()
    theirs = (
        pipelines_pb2_grpc.PipelinesServiceStub(connect(other.token))
        .CreatePipeline(pipelines_pb2.CreatePipelineRequest())
        .pipeline
    )
    error = details_of(lambda: record(account.usage, "", pipeline_id=theirs.id, cost_micros=1))
    assert error.code is Code.NOT_FOUND
    missing = details_of(lambda: record(account.usage, "", article_id=str(uuid.uuid4())))
    assert missing.code is Code.NOT_FOUND
    usage = account.usage.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest()).usage
    assert usage.event_count == 0  # nothing written


def test_cost_report_groups_add_up_to_the_ledger(account, service):
    start = "2026-05-01T00:00:00Z"
    rows = [
        ("openai", "gpt-4o", "2026-05-03T10:00:00Z", 1_500_000, 10, 20),
        ("openai", "gpt-4o-mini", "2026-05-03T23:59:59Z", 250_000, 5, 5),
        ("anthropic", "claude", "2026-05-04T00:00:00Z", 3_000_001, 7, 8),
        ("serpapi", "", "2026-05-20T12:00:00Z", 10_000, 0, 0),
    ]
    for svc, model, moment, cost, tokens_in, tokens_out in rows:
        record(
            service, account.id, service=svc, model=model, event_time=ts(moment),
            cost_micros=cost, input_tokens=tokens_in, output_tokens=tokens_out,
        )  # fmt: skip
    total = sum(r[3] for r in rows)

    def report(group_by, user_id=account.id):
        return service.GetCostReport(
            usage_pb2.GetCostReportRequest(
                start_time=ts(start), end_time=ts("2026-06-01T00:00:00Z"), user_id=user_id,
                group_by=group_by,
            )
        )  # fmt: skip

    by_service = report(Group.COST_REPORT_GROUP_BY_SERVICE)
    assert by_service.total_cost_micros == total
    assert {r.key: r.cost_micros for r in by_service.rows} == {
        "openai": 1_750_000, "anthropic": 3_000_001, "serpapi": 10_000,
    }  # fmt: skip
    assert [r.key for r in by_service.rows] == ["anthropic", "openai", "serpapi"]
    by_day = report(Group.COST_REPORT_GROUP_BY_DAY)
    assert {r.key: r.event_count for r in by_day.rows} == {
        "2026-05-03": 2, "2026-05-04": 1, "2026-05-20": 1,
    }  # fmt: skip
    for group in (Group.COST_REPORT_GROUP_BY_MODEL, Group.COST_REPORT_GROUP_BY_USER):
        result = report(group)
        assert sum(r.cost_micros for r in result.rows) == result.total_cost_micros == total
        assert sum(r.input_tokens for r in result.rows) == 22
    bad = usage_pb2.GetCostReportRequest(group_by=Group.COST_REPORT_GROUP_BY_DAY)
    assert status_of(lambda: service.GetCostReport(bad)) is Code.INVALID_ARGUMENT


def test_a_hundred_thousand_micro_events_sum_exactly(account, service, database_url):
    """The ledger holds 100,000 events of 1 micro; reports and rollups must say 100,000."""
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO usage_events (user_id, service, cost_micros, request_id, event_time,"
                " month) SELECT :user, 'openai', 1, gen_random_uuid(),"
                " '2024-03-15T12:00:00Z'::timestamptz + n * interval '1 millisecond',"
                " '2024-03-01' FROM generate_series(1, 100000) AS n"
            ),
            {"user": account.id},
        )
    engine.dispose()
    report = service.GetCostReport(
        usage_pb2.GetCostReportRequest(
            start_time=ts("2024-03-01T00:00:00Z"), end_time=ts("2024-04-01T00:00:00Z"),
            user_id=account.id, group_by=Group.COST_REPORT_GROUP_BY_DAY,
        )
    )  # fmt: skip
    assert report.total_cost_micros == 100_000
    assert [(r.key, r.cost_micros, r.event_count) for r in report.rows] == [
        ("2024-03-15", 100_000, 100_000)
    ]

    def one_micro(i):
        record(service, account.id, cost_micros=1, event_time=ts("2024-04-10T00:00:00Z"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_micro, range(1000)))
    april = service.GetMonthlyUsage(
        usage_pb2.GetMonthlyUsageRequest(user_id=account.id, month="2024-04")
    ).usage
    assert april.cost_micros == 1000 and april.event_count == 1000


def test_users_cannot_read_others_usage_or_raise_their_own_limits(account, new_account, service):
    other = new_account()
    record(service, other.id, cost_micros=42)
    calls = {
        "GetMonthlyUsage": lambda: account.usage.GetMonthlyUsage(
            usage_pb2.GetMonthlyUsageRequest(user_id=other.id)
        ),
        "ListMonthlyUsage": lambda: account.usage.ListMonthlyUsage(
            usage_pb2.ListMonthlyUsageRequest(user_id=other.id)
        ),
        "ListUsageEvents": lambda: account.usage.ListUsageEvents(
            usage_pb2.ListUsageEventsRequest(user_id=other.id)
        ),
        "CheckQuota": lambda: account.usage.CheckQuota(
            usage_pb2.CheckQuotaRequest(user_id=other.id)
        ),
        "GetUsageLimits": lambda: account.usage.GetUsageLimits(
            usage_pb2.GetUsageLimitsRequest(user_id=other.id)
        ),
        "RecordUsageFor": lambda: record(account.usage, other.id, cost_micros=1),
        "GetCostReport": lambda: account.usage.GetCostReport(
            usage_pb2.GetCostReportRequest(
                start_time=ts("2020-01-01T00:00:00Z"),
                end_time=ts("2030-01-01T00:00:00Z"),
                user_id=other.id,
                group_by=Group.COST_REPORT_GROUP_BY_SERVICE,
            )
        ),  # fmt: skip
    }
    for name, call in calls.items():
        assert status_of(call) is Code.NOT_FOUND, name
    mine = account.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest()).events
    assert all(e.user_id == account.id for e in mine)
    raise_own = lambda: set_limits(account.usage, account.id, cost=10**12)  # noqa: E731
    assert status_of(raise_own) is Code.PERMISSION_DENIED
    limits = account.usage.GetUsageLimits(usage_pb2.GetUsageLimitsRequest()).limits
    assert limits.effective_cost_limit_micros == 50_000_000 and limits.cost_limit_micros == 0


def test_limits_round_trip_and_reset_to_default(account, service):
    limits = set_limits(service, account.id, cost=5_000_000, articles=3)
    assert (limits.effective_cost_limit_micros, limits.effective_article_limit) == (5_000_000, 3)
    reset = set_limits(service, account.id)
    assert (reset.cost_limit_micros, reset.effective_cost_limit_micros) == (0, 50_000_000)


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "nope"}, "request_id"),
        ({"service": ""}, "service"),
        ({"cost_micros": -1}, "cost_micros"),
        ({"input_tokens": -5}, "input_tokens"),
        ({"event_time": ts("2099-01-01T00:00:00Z")}, "event_time"),
    ],
)
def test_invalid_events(account, service, fields, bad):
    values = {"request_id": str(uuid.uuid4()), "service": "openai", **fields}
    request = usage_pb2.RecordUsageRequest(user_id=account.id, **values)
    error = details_of(lambda: service.RecordUsage(request))
    assert error.code is Code.INVALID_ARGUMENT and bad in error.field_violations


def test_list_monthly_usage_newest_first_and_paged(account, service):
    for moment in ("2025-01-10T00:00:00Z", "2025-03-10T00:00:00Z", "2025-02-10T00:00:00Z"):
        record(service, account.id, cost_micros=1, event_time=ts(moment))
    first = service.ListMonthlyUsage(
        usage_pb2.ListMonthlyUsageRequest(user_id=account.id, page_size=2)
    )
    second = service.ListMonthlyUsage(
        usage_pb2.ListMonthlyUsageRequest(
            user_id=account.id, page_size=2, page_token=first.next_page_token
        )
    )
    months = [m.month for m in [*first.usage, *second.usage]]
    assert months == ["2025-03", "2025-02", "2025-01"] and not second.next_page_token

"""RecordUsage in groups (storage/usage_batch.py): one user's calls that arrive while one of
theirs is in the database go as one statement, and each still gets exactly its own answer."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import current_thread
from typing import Any

import grpc
import pytest
from blogstore.v1 import usage_pb2, usage_pb2_grpc
from sqlalchemy import text

from server.fairness import FairShare
from storage.actors import Actor, ActorKind, Caller
from storage.engine import make_engine
from storage.errors import InvalidArgument, NotFound, QuotaExceeded
from storage.repositories.usage import month_of
from storage.uow import Database
from storage.usage_batch import UsageRecorder
from tests.support import SERVICE_KEY

CALLER = Caller(Actor(ActorKind.SERVICE, name="groups"), request_id="req")
DEFAULTS = (1_000_000, 100)  # cost micros, articles


@pytest.fixture(scope="module")
def engine(database_url):
    engine = make_engine(database_url, pool_size=20)
    yield engine
    engine.dispose()


@pytest.fixture
def recorder(engine) -> UsageRecorder:
    return UsageRecorder(Database(engine), DEFAULTS)


@pytest.fixture
def user_id(new_account) -> uuid.UUID:
    return uuid.UUID(new_account().id)


def event(user_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    values = {
        "user_id": user_id, "request_id": uuid.uuid4(), "service": "openai", "model": "m",
        "operation": "op", "prompt_name": "", "prompt_version": "", "error_message": "",
        "input_tokens": 3, "output_tokens": 2, "cost_micros": 10, "articles_generated": 0,
        "api_calls": 1, "pipeline_id": None, "article_id": None, "status": "ok",
        "duration_ms": None, "parameters": None, "input_text": None, "output_text": None,
        "event_time": now, "month": month_of(now),
    }  # fmt: skip
    return {**values, **fields}


def attempt(recorder: UsageRecorder, values: dict[str, Any]) -> Any:
    try:
        return recorder.record(CALLER, values)
    except Exception as error:  # noqa: BLE001 - the answer under test
        return error


@pytest.fixture
def hold_month(engine, user_id) -> Iterator[Callable[[], Callable[[], None]]]:
    """hold_month() locks the user's month row (one event first: it exists) until the
    returned release() is called, so the first call waits in the database while the next
    ones gather behind it."""
    connection = engine.connect()

    def hold() -> Callable[[], None]:
        UsageRecorder(Database(engine), DEFAULTS).record(CALLER, event(user_id, cost_micros=0))
        transaction = connection.begin()
        connection.execute(
            text("SELECT 1 FROM usage_monthly WHERE user_id = :u FOR UPDATE"), {"u": user_id}
        )
        return transaction.rollback

    yield hold
    connection.close()


def gathered(recorder: UsageRecorder, first: dict[str, Any], rest: list[dict[str, Any]]):
    """Answers of `first` (held in the database) and then `rest`, gathered behind it."""
    pool = ThreadPoolExecutor(len(rest) + 1)
    head = pool.submit(attempt, recorder, first)
    time.sleep(0.3)  # the first is in the database, waiting on the lock
    tail = [pool.submit(attempt, recorder, values) for values in rest]
    deadline = time.monotonic() + 10
    while recorder.waiting_calls < len(rest):
        assert time.monotonic() < deadline, "the calls did not gather"
        time.sleep(0.01)
    return pool, head, tail


def test_calls_that_gather_share_one_statement_and_get_their_own_answers(
    recorder, user_id, hold_month
):
    release = hold_month()
    first = event(user_id, cost_micros=100)
    rest = [event(user_id, cost_micros=100 + i, input_tokens=i) for i in range(6)]
    pool, head, tail = gathered(recorder, first, rest)
    release()
    answers = [head.result(), *(f.result() for f in tail)]
    pool.shutdown()
    assert recorder.groups == 2 and recorder.calls == 7
    ids = {a.event.id for a in answers}
    assert len(ids) == 7 and all(a.created for a in answers)
    # In order: each call's month totals are those after it, as one at a time would give.
    counts = [a.totals.event_count for a in answers]
    assert counts == list(range(2, 9))
    running = 0
    for values, answer in zip([first, *rest], answers, strict=True):
        running += values["cost_micros"]
        assert answer.totals.cost_micros == running
        assert answer.event.request_id == values["request_id"]
        assert answer.event.cost_micros == values["cost_micros"]
    with recorder.db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*), sum(cost_micros) FROM usage_events WHERE user_id = :u"),
            {"u": user_id},
        ).one()
        audits = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE user_id = :u AND action = :a"),
            {"u": user_id, "a": "usage.record"},
        ).scalar()
    assert rows == (8, running) and audits == 8


def test_a_refused_call_in_a_group_leaves_the_others_answered(
    recorder, user_id, hold_month, engine
):
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO usage_limits (user_id, cost_limit_micros) VALUES (:u, 1000)"),
            {"u": user_id},
        )
    earlier = event(user_id, cost_micros=5)
    recorder.record(CALLER, earlier)
    release = hold_month()
    first = event(user_id, cost_micros=300)
    rest = [
        event(user_id, cost_micros=400),  # 705: fits
        event(user_id, article_id=uuid.uuid4()),  # no such article
        event(user_id, cost_micros=400),  # 1,105: over the limit
        earlier,  # a retry: the first event again
        {**earlier, "cost_micros": 6},  # the same request_id for another event
        event(user_id, cost_micros=295),  # 1,000: fits exactly
        event(user_id, cost_micros=1),  # over by one
    ]
    pool, head, tail = gathered(recorder, first, rest)
    release()
    answers = [head.result(), *(f.result() for f in tail)]
    pool.shutdown()
    fits, missing, over, retry, reused, exact, one_more = answers[1:]
    assert answers[0].totals.cost_micros == 305 and fits.totals.cost_micros == 705
    assert isinstance(missing, NotFound)
    assert isinstance(over, QuotaExceeded) and "705 + 400" in str(over.violations)
    assert not retry.created and retry.event.request_id == str(earlier["request_id"])
    assert retry.event.cost_micros == 5 and retry.totals.cost_micros == 705
    assert isinstance(reused, InvalidArgument)
    assert exact.created and exact.totals.cost_micros == 1000
    assert isinstance(one_more, QuotaExceeded)
    with engine.connect() as connection:
        total = connection.execute(
            text("SELECT cost_micros, event_count FROM usage_monthly WHERE user_id = :u"),
            {"u": user_id},
        ).one()
        claims = connection.execute(
            text("SELECT count(*) FROM usage_request_ids WHERE user_id = :u"), {"u": user_id}
        ).scalar()
    assert tuple(total) == (1000, 5)  # the locked one's 0, then 5, 300, 400, 295
    assert claims == 5  # refused calls claim nothing


def test_one_request_id_twice_goes_in_two_groups(recorder, user_id, hold_month):
    release = hold_month()
    again = event(user_id, cost_micros=7)
    pool, head, tail = gathered(recorder, event(user_id), [again, dict(again), event(user_id)])
    release()
    first, second, other = (f.result() for f in tail)
    pool.shutdown()
    head.result()
    assert recorder.groups == 3  # the held one, then [again, other], then the repeat
    assert first.created and not second.created and first.event.id == second.event.id
    assert other.created


def test_a_group_that_fails_as_a_whole_records_each_call_alone(recorder, user_id, hold_month):
    release = hold_month()
    bad = event(user_id, duration_ms=10**12)  # past the check constraint: the insert fails
    good = [event(user_id, cost_micros=20 + i) for i in range(3)]
    pool, head, tail = gathered(recorder, event(user_id), [good[0], bad, *good[1:]])
    release()
    answers = [f.result() for f in tail]
    pool.shutdown()
    head.result()
    assert isinstance(answers[1], Exception)
    for values, answer in zip(good, [answers[0], *answers[2:]], strict=True):
        assert answer.created and answer.event.cost_micros == values["cost_micros"]
    assert answers[-1].totals.event_count == 5


def drained_four(recorder: UsageRecorder, user_id: uuid.UUID, hold_month) -> ThreadPoolExecutor:
    """One call held in the database with four gathered behind it, all five answered: the
    drainer has sent the four as a group and now waits for two of them to come back."""
    release = hold_month()
    pool, head, tail = gathered(recorder, event(user_id), [event(user_id) for _ in range(4)])
    release()
    assert not any(isinstance(f.result(timeout=10), Exception) for f in [head, *tail])
    assert (recorder.groups, recorder.calls) == (2, 5)
    time.sleep(0.2)  # the drainer is waiting for them
    return pool


def test_the_next_group_waits_for_half_the_calls_coming_back(engine, user_id, hold_month):
    recorder = UsageRecorder(Database(engine), DEFAULTS, group_wait=30.0)
    pool = drained_four(recorder, user_id, hold_month)
    back = [pool.submit(attempt, recorder, event(user_id))]
    time.sleep(0.3)
    assert recorder.groups == 2 and recorder.waiting_calls == 1  # one of four is back: waits
    back.append(pool.submit(attempt, recorder, event(user_id)))
    answers = [f.result(timeout=10) for f in back]  # long before the 30 s: two are back
    assert all(a.created for a in answers)
    assert (recorder.groups, recorder.calls) == (3, 7)  # the two returning ones: one group
    # The other two, coming back while nothing waits, go without waiting for the first two.
    late = [pool.submit(attempt, recorder, event(user_id)) for _ in range(2)]
    assert all(f.result(timeout=10).created for f in late)
    pool.shutdown()
    assert recorder.calls == 9 and recorder.waiting_calls == 0


def test_a_group_waits_no_longer_than_the_group_wait(engine, user_id, hold_month):
    recorder = UsageRecorder(Database(engine), DEFAULTS, group_wait=0.5)
    pool = drained_four(recorder, user_id, hold_month)
    started = time.monotonic()
    alone = pool.submit(attempt, recorder, event(user_id)).result(timeout=10)
    waited = time.monotonic() - started
    pool.shutdown()
    assert alone.created and (recorder.groups, recorder.calls) == (3, 6)
    assert 0.2 <= waited < 5  # it waited (0.5 s from the drain's last answer), then went alone


def test_more_busy_users_than_drainers_are_all_answered(engine, new_account):
    """Five users' calls at once with two drainer threads: a drain waits its turn, none
    starves (a drainer only waiting for calls gives its thread up within the group wait)."""
    recorder = UsageRecorder(Database(engine), DEFAULTS, group_wait=0.05, threads=2)
    users = [uuid.UUID(new_account().id) for _ in range(5)]
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(attempt, recorder, event(u)) for _ in range(4) for u in users]
        answers = [f.result(timeout=30) for f in futures]
    assert all(a.created for a in answers)
    for user in users:
        assert max(a.totals.event_count for a in answers if a.event.user_id == user) == 4


@pytest.mark.parametrize("share_free", [True, False])
def test_a_drain_takes_one_of_the_principals_calls(engine, user_id, hold_month, share_free):
    """A drainer thread counts as one of the principal's calls in flight (its share of the
    request threads, server/fairness.py); with none free, the call that found its key idle
    drains the key itself, on its own request thread (which holds a share already)."""
    slots = FairShare("calls in flight", lambda _actor: (1, "max_calls_per_service"))
    recorder = UsageRecorder(Database(engine), DEFAULTS, slots=slots)
    if not share_free:
        slots.take(CALLER.actor)  # the principal's one call in flight elsewhere
    threads: list[str] = []

    def record(values: dict[str, Any]) -> None:
        recorder.submit(CALLER, values, lambda _: threads.append(current_thread().name))

    release = hold_month()
    with ThreadPoolExecutor(3, thread_name_prefix="request") as pool:
        first = pool.submit(record, event(user_id))
        time.sleep(0.3)  # the first is in the database, waiting on the lock
        for _ in range(2):
            pool.submit(record, event(user_id))
        while recorder.waiting_calls < 2:
            time.sleep(0.01)
        release()
        first.result(timeout=10)
    deadline = time.monotonic() + 10
    while len(threads) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(threads) == 3 and threads[0].startswith("request")
    drained_on = {name.partition("_")[0] for name in threads[1:]}
    assert drained_on == ({"usage-groups"} if share_free else {threads[0].partition("_")[0]})
    while slots.held(CALLER.actor) != (0 if share_free else 1):  # the drain gives its back
        assert time.monotonic() < deadline, "the drain kept its share"
        time.sleep(0.01)


def test_a_request_id_claimed_meanwhile_is_seen_as_claimed(recorder, engine, user_id):
    """Another transaction holds a claim of the request_id, then commits it: the group's own
    claim waits for it, then writes nothing (40001, 0025) and the call, recorded once more
    event by event, sees the claim (its event gone: the request_id is free again, so the call
    is recorded, exactly once)."""
    request_id = uuid.uuid4()
    with engine.connect() as other:
        claim = other.begin()
        other.execute(
            text(
                "INSERT INTO usage_request_ids (user_id, request_id, event_id, event_time) "
                "VALUES (:u, :r, gen_random_uuid(), now())"
            ),
            {"u": user_id, "r": request_id},
        )
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(attempt, recorder, event(user_id, request_id=request_id))
            time.sleep(0.5)  # the group waits on the uncommitted claim
            claim.commit()
            answer = future.result(timeout=10)
    assert not isinstance(answer, Exception), answer
    assert answer.created and answer.totals.event_count == 1
    assert recorder.groups == 1 and recorder.calls == 1
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*) FROM usage_events WHERE user_id = :u"), {"u": user_id}
        ).scalar()
        month = connection.execute(
            text("SELECT event_count FROM usage_monthly WHERE user_id = :u"), {"u": user_id}
        ).scalar()
    assert rows == 1 and month == 1


def test_a_group_reads_none_of_the_users_claims(engine, user_id):
    """A group's request_ids are claimed through their unique index (0025), not looked up
    among the user's claims: 0024's look-up, planned while the claims table was small, read
    every claim of the user for each group, slower as they grew (BENCHMARKS.md, round 7)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO usage_request_ids (user_id, request_id, event_id, event_time) "
                "SELECT :u, gen_random_uuid(), gen_random_uuid(), now() "
                "FROM generate_series(1, 2000)"
            ),
            {"u": user_id},
        )
    values = event(user_id)
    item = {
        **values, "i": 0, "id": str(uuid.uuid4()), "user_id": None, "month": None,
        "event_time": values["event_time"].isoformat(), "audit_request_id": "req",
    }  # fmt: skip
    with engine.connect() as connection, connection.begin() as transaction:
        # The plan a busy connection keeps (0024's look-up was planned from statistics).
        connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        result = connection.execute(
            text(
                "SELECT blogstore_record_usage_fresh(:u, :m, 1000000, 100, 'service', NULL, "
                "'groups', CAST(:events AS jsonb))"
            ),
            {"u": user_id, "m": values["month"], "events": json.dumps([item], default=str)},
        ).scalar()
        read = connection.execute(
            text("SELECT pg_stat_get_xact_tuples_returned('pk_usage_request_ids'::regclass)")
        ).scalar()
        scanned = connection.execute(
            text(
                "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'usage_request_ids'"
            )
        ).scalar()
        transaction.rollback()
    assert result["results"] == [None] and result["totals"][5] == 1
    assert scanned == 0 and read <= 2, (scanned, read)


def test_concurrent_calls_near_the_limit_never_exceed_it(connect, new_account):
    """Through the server: 40 calls of one user at once against a limit of 13 of them."""
    service = usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))
    user = new_account()
    cost, k = 1_000_003, 13
    service.SetUsageLimits(
        usage_pb2.SetUsageLimitsRequest(
            limits=usage_pb2.UsageLimits(user_id=user.id, cost_limit_micros=cost * k)
        )
    )
    start = threading.Barrier(40)

    def call(i: int):
        start.wait()
        try:
            return service.RecordUsage(
                usage_pb2.RecordUsageRequest(
                    user_id=user.id,
                    request_id=str(uuid.uuid4()),
                    service="openai",
                    cost_micros=cost,
                )  # fmt: skip
            )
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(call, range(40)))
    accepted = [a for a in answers if not isinstance(a, grpc.StatusCode)]
    assert len(accepted) == k
    assert answers.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40 - k
    assert sorted(a.usage.event_count for a in accepted) == list(range(1, k + 1))
    assert max(a.usage.cost_micros for a in accepted) == cost * k


def test_pipeline_totals_and_versions_in_a_group(engine, new_account, connect):
    from blogstore.v1 import pipelines_pb2, pipelines_pb2_grpc

    account = new_account()
    user_id = uuid.UUID(account.id)
    pipelines = pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))
    mine = pipelines.CreatePipeline(pipelines_pb2.CreatePipelineRequest()).pipeline
    theirs = (
        pipelines_pb2_grpc.PipelinesServiceStub(connect(new_account().token))
        .CreatePipeline(pipelines_pb2.CreatePipelineRequest())
        .pipeline
    )
    recorder = UsageRecorder(Database(engine), DEFAULTS)
    recorder.record(CALLER, event(user_id, cost_micros=0))
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(
        text("SELECT 1 FROM usage_monthly WHERE user_id = :u FOR UPDATE"), {"u": user_id}
    )
    rest = [
        event(user_id, pipeline_id=uuid.UUID(mine.id), cost_micros=11, input_tokens=1),
        event(user_id, pipeline_id=uuid.UUID(theirs.id), cost_micros=13),
        event(user_id, pipeline_id=uuid.UUID(mine.id), cost_micros=17, output_tokens=4),
    ]
    pool, head, tail = gathered(recorder, event(user_id), rest)
    transaction.rollback()
    connection.close()
    first, other, second = (f.result() for f in tail)
    pool.shutdown()
    head.result()
    assert recorder.groups == 3  # the month's first event, the held one, then the three
    assert isinstance(other, NotFound) and first.created and second.created
    got = pipelines.GetPipeline(pipelines_pb2.GetPipelineRequest(id=mine.id)).pipeline
    assert got.total_cost_micros == 28 and got.llm_tokens_used == 1 + 2 + 3 + 4
    assert got.api_calls_made == 2 and int(got.etag.strip('"')) == int(mine.etag.strip('"')) + 2


def test_calls_waiting_for_their_group_hold_no_request_thread(connect, user_id, hold_month):
    """RecordUsage is answered by the thread that records its group (server/interceptors.py,
    deferred_reply): 30 calls of one principal waiting behind a held month row take none of
    the 16 request threads (its fair share is 12), so the same principal is still served at
    once meanwhile, and every waiting call is answered once the row is free."""
    service = usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))
    release = hold_month()

    def call(i: int) -> Any:
        request = usage_pb2.RecordUsageRequest(
            user_id=str(user_id), request_id=str(uuid.uuid4()), service="openai", cost_micros=1
        )
        try:
            return service.RecordUsage(request, timeout=30)
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(30) as pool:
        calls = [pool.submit(call, i) for i in range(30)]
        time.sleep(1.5)  # past the fair share's 1 s wait: a call held beyond it is refused
        assert not any(c.done() for c in calls), "a call was answered while the row was held"
        started = time.monotonic()
        service.GetMonthlyUsage(usage_pb2.GetMonthlyUsageRequest(user_id=str(user_id)))
        assert time.monotonic() - started < 1.0, "the principal's threads were taken"
        release()
        answers = [c.result() for c in calls]
    assert all(isinstance(a, usage_pb2.RecordUsageResponse) for a in answers), answers
    assert sorted(a.usage.event_count for a in answers) == list(range(2, 32))


def test_a_deferred_answer_without_grpcio_internals(connect, user_id, monkeypatch):
    """Should grpcio's internals change, RecordUsage answers through the stream's public
    callback instead (server/decoding.send_unary): the same answer and request id."""
    import server.decoding

    monkeypatch.setattr(server.decoding, "_STATUS", None)
    service = usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))
    request = usage_pb2.RecordUsageRequest(
        user_id=str(user_id), request_id=str(uuid.uuid4()), service="openai", cost_micros=5
    )
    answer, call = service.RecordUsage.with_call(request, metadata=(("x-request-id", "pub-1"),))
    assert answer.event.request_id == request.request_id and answer.usage.cost_micros == 5
    assert ("x-request-id", "pub-1") in call.trailing_metadata()
    unknown = usage_pb2.RecordUsageRequest(
        user_id=str(uuid.uuid4()), request_id=str(uuid.uuid4()), service="openai"
    )
    with pytest.raises(grpc.RpcError) as refused:  # refused by the group, after the handler
        service.RecordUsage(unknown, metadata=(("x-request-id", "pub-2"),))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "pub-2") in refused.value.trailing_metadata()

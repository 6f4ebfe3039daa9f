"""ClaimDueCompetitors and RecordCompetitorCheck: leases for concurrent crawler workers.

A module of its own, so that its database holds only the competitors these tests create; each
test first pushes every earlier competitor's next check a year out.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import competitors_pb2 as pb

from storage.engine import make_engine
from storage.repositories import competitor_jobs
from tests.competitor_support import create, now, sql, stub, ts
from tests.support import SERVICE_KEY, details_of

Code = grpc.StatusCode
OVERDUE = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def service(connect):
    return stub(connect(SERVICE_KEY))


@pytest.fixture(autouse=True)
def quiet_queue(database_url):
    sql(database_url, "UPDATE competitors SET next_check_time = now() + interval '1 year'")


def due(competitors, user_id: str = "", **fields) -> pb.Competitor:
    return create(competitors, user_id=user_id, next_check_time=ts(now() - OVERDUE), **fields)


def claim(competitors, limit: int = 1000, lease_seconds: int = 600) -> list[pb.Competitor]:
    request = pb.ClaimDueCompetitorsRequest(limit=limit, lease_seconds=lease_seconds)
    return list(competitors.ClaimDueCompetitors(request).competitors)


def _nodes(plan: dict):
    """The plan's nodes, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def ids(competitors: list[pb.Competitor]) -> set[str]:
    return {c.id for c in competitors}


class TestClaim:
    def test_four_workers_get_disjoint_sets_covering_all(self, service, new_account):
        owners = [new_account().id for _ in range(3)]
        made = {due(service, owners[i % 3]).id for i in range(100)}
        start = threading.Barrier(4)

        def worker(_: int) -> list[str]:
            start.wait()
            got: list[str] = []
            for _ in range(30):  # bounded: a broken lease would hand out rows forever
                batch = claim(service, limit=7)
                if not batch:
                    break
                got += [c.id for c in batch]
            return got

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(worker, range(4)))
        claimed = [i for result in results for i in result]
        assert len(claimed) == len(set(claimed)) == 100  # no competitor handed out twice
        assert set(claimed) == made
        assert sum(1 for result in results if result) >= 2  # the workers really competed

    def test_lease_fields_and_order(self, service, new_account):
        owner = new_account().id
        hours = (3, 1, 2)
        made = [
            create(service, user_id=owner, next_check_time=ts(now() - dt.timedelta(hours=h)))
            for h in hours
        ]
        got = claim(service, limit=2, lease_seconds=120)
        assert [c.id for c in got] == [made[0].id, made[2].id]  # the longest overdue first
        for competitor in got:
            lease = competitor.lease_expire_time.ToDatetime(dt.UTC) - now()
            assert dt.timedelta(seconds=100) < lease <= dt.timedelta(seconds=120)
        assert ids(claim(service)) == {made[1].id}

    def test_a_live_lease_holds_and_an_expired_one_is_claimable_again(
        self, service, new_account, database_url
    ):
        competitor = due(service, new_account().id)
        assert ids(claim(service)) == {competitor.id}
        assert claim(service) == []  # leased for 600 s
        sql(
            database_url,
            "UPDATE competitors SET lease_expire_time = now() - interval '1 second' WHERE id = :id",
            id=competitor.id,
        )
        assert ids(claim(service)) == {competitor.id}

    def test_a_lease_runs_out_on_its_own(self, service, new_account):
        competitor = due(service, new_account().id)
        assert ids(claim(service, lease_seconds=2)) == {competitor.id}
        assert claim(service) == []
        time.sleep(2.2)
        assert ids(claim(service)) == {competitor.id}

    def test_inactive_and_not_yet_due_are_not_claimed(self, service, new_account):
        owner = new_account().id
        due(service, owner, is_active=False)
        create(service, user_id=owner, next_check_time=ts(now() + dt.timedelta(minutes=5)))
        wanted = due(service, owner)
        assert ids(claim(service)) == {wanted.id}

    def test_a_claim_does_not_change_the_etag(self, service, new_account):
        competitor = due(service, new_account().id)
        (claimed,) = claim(service)
        assert claimed.etag == competitor.etag and claimed.update_time == competitor.update_time

    def test_a_user_claims_only_its_own(self, service, new_account, connect):
        me, other = new_account(), new_account()
        mine = {due(service, me.id).id for _ in range(2)}
        theirs = due(service, other.id).id
        assert ids(claim(stub(connect(me.token)))) == mine
        assert ids(claim(service)) == {theirs}

    def test_a_claim_passes_over_leased_rows_inside_the_index(
        self, service, new_account, database_url
    ):
        """Migration 0022: both of the claim's conditions are conditions of ix_competitors_due:
        a leased row is passed over inside the index, never fetched from the table."""
        owner = new_account().id
        for _ in range(30):
            due(service, owner)
        assert len(claim(service, limit=20)) == 20
        prepared = competitor_jobs.CLAIM[False]
        values = {"limit": 10, "lease_seconds": 60, "recent": "30 days", "action": "x"}
        args = [values.get(name) for name in prepared.params]
        engine = make_engine(database_url, pool_size=1)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a small table
                conn.exec_driver_sql(
                    f"PREPARE plan_test ({', '.join(prepared.types)}) AS {prepared.body}"
                )
                placeholders = ", ".join(["%s"] * len(args))
                plan = conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) EXECUTE plan_test ({placeholders})", tuple(args)
                ).scalar_one()
                conn.exec_driver_sql("DEALLOCATE plan_test")
        finally:
            engine.dispose()
        nodes = list(_nodes(plan[0]["Plan"]))
        used = [n for n in nodes if n.get("Index Name") == "ix_competitors_due"]
        assert used and "coalesce" in used[0]["Index Cond"].lower()
        assert "next_check_time" in used[0]["Index Cond"]
        assert not [n for n in nodes if "lease_expire_time" in n.get("Filter", "")]

    @pytest.mark.parametrize(
        ("limit", "lease_seconds", "bad_field"),
        [
            (0, 60, "limit"),
            (1001, 60, "limit"),
            (10, 0, "lease_seconds"),
            (10, 86401, "lease_seconds"),
        ],
    )
    def test_limits_are_validated(self, service, limit, lease_seconds, bad_field):
        error = details_of(lambda: claim(service, limit=limit, lease_seconds=lease_seconds))
        assert error.code is Code.INVALID_ARGUMENT and set(error.field_violations) == {bad_field}


class TestRecordCheckReleasesTheLease:
    def test_record_schedules_the_next_check_from_the_check_time(self, service, new_account):
        competitor = due(service, new_account().id, check_frequency_hours=24)
        (leased,) = claim(service)
        assert leased.HasField("lease_expire_time")
        checked = now().replace(microsecond=0) - dt.timedelta(hours=25)
        recorded = service.RecordCompetitorCheck(
            pb.RecordCompetitorCheckRequest(competitor_id=competitor.id, check_time=ts(checked))
        ).competitor
        assert not recorded.HasField("lease_expire_time")
        assert recorded.next_check_time.ToDatetime(dt.UTC) == checked + dt.timedelta(hours=24)
        # due an hour ago and no longer leased: the next claim gets it at once
        assert ids(claim(service)) == {competitor.id}

    def test_a_check_done_now_is_not_due_again(self, service, new_account):
        competitor = due(service, new_account().id, check_frequency_hours=2)
        claim(service)
        recorded = service.RecordCompetitorCheck(
            pb.RecordCompetitorCheckRequest(competitor_id=competitor.id, error="timeout")
        ).competitor
        wait = recorded.next_check_time.ToDatetime(dt.UTC) - now()
        assert dt.timedelta(hours=1, minutes=59) < wait <= dt.timedelta(hours=2)
        assert recorded.last_error == "timeout"
        assert claim(service) == []

"""CompetitorsService through the real server: standard methods, articles, statistics, scope."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import competitors_pb2 as pb
from google.protobuf import field_mask_pb2, struct_pb2

from tests.competitor_support import create, domain, now, sql, stub, ts
from tests.support import SERVICE_KEY, details_of, status_of, unique

Code = grpc.StatusCode


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


@pytest.fixture(scope="module")
def admin(connect, admin_key):
    return stub(connect(admin_key))


@pytest.fixture(scope="module")
def service(connect):
    return stub(connect(SERVICE_KEY))


@pytest.fixture(scope="module")
def user(new_account, connect):
    """A factory of (account, competitors stub bound to its access token)."""

    def make():
        account = new_account()
        return account, stub(connect(account.token))

    return make


def article(url: str, **fields) -> pb.CompetitorArticle:
    return pb.CompetitorArticle(url=url, **fields)


def upsert(competitors, competitor_id: str, *articles: pb.CompetitorArticle):
    return competitors.UpsertCompetitorArticles(
        pb.UpsertCompetitorArticlesRequest(competitor_id=competitor_id, articles=list(articles))
    )


def list_articles(competitors, competitor_id: str, **filters) -> list[pb.CompetitorArticle]:
    """Every page of ListCompetitorArticles, in order."""
    seen, token = [], ""
    while True:
        page = competitors.ListCompetitorArticles(
            pb.ListCompetitorArticlesRequest(
                competitor_id=competitor_id, page_token=token, **filters
            )
        )
        seen += list(page.articles)
        token = page.next_page_token
        if not token:
            return seen


class TestCreateCompetitor:
    def test_creates_with_normalized_domain_and_defaults(self, user):
        account, competitors = user()
        name = unique("shop")
        competitor = create(competitors, domain=f"https://WWW.{name}.Example.com:443/blog?x=1")
        assert competitor.domain == f"{name}.example.com"
        assert competitor.user_id == account.id and uuid.UUID(competitor.id)
        assert competitor.name == competitor.domain
        assert competitor.is_active and competitor.check_frequency_hours == 24
        assert abs(competitor.next_check_time.ToDatetime(dt.UTC) - now()) < dt.timedelta(minutes=1)
        assert not competitor.HasField("last_check_time") and not competitor.last_error
        assert competitor.etag and competitor.create_time.seconds > 0
        assert competitor.total_articles_found == 0 and list(competitor.trending_topics) == []

    def test_keeps_given_fields(self, user):
        _, competitors = user()
        metadata = struct_pb2.Struct()
        metadata.update({"plan": "pro", "tags": ["a", "b"]})
        due = now() + dt.timedelta(hours=3)
        competitor = create(
            competitors,
            domain="bücher-" + unique("x") + ".de",
            name="Books",
            is_active=False,
            check_frequency_hours=6,
            next_check_time=ts(due),
            metadata=metadata,
        )
        assert competitor.domain.startswith("xn--")
        assert competitor.name == "Books" and not competitor.is_active
        assert competitor.check_frequency_hours == 6
        assert competitor.next_check_time.ToDatetime(dt.UTC) == due
        assert dict(competitor.metadata) == {"plan": "pro", "tags": ["a", "b"]}

    @pytest.mark.parametrize(
        ("fields", "bad_field"),
        [
            ({"domain": ""}, "competitor.domain"),
            ({"domain": "localhost"}, "competitor.domain"),
            ({"domain": "ftp://example.com"}, "competitor.domain"),
            ({"domain": "exa mple.com"}, "competitor.domain"),
            ({"check_frequency_hours": 721}, "competitor.check_frequency_hours"),
            ({"check_frequency_hours": -1}, "competitor.check_frequency_hours"),
            ({"name": "n" * 201}, "competitor.name"),
        ],
    )
    def test_invalid_fields_are_named(self, user, fields, bad_field):
        _, competitors = user()
        fields = {"domain": domain(), **fields}
        request = pb.CreateCompetitorRequest(competitor=pb.Competitor(**fields))
        error = details_of(lambda: competitors.CreateCompetitor(request))
        assert error.code is Code.INVALID_ARGUMENT and bad_field in error.field_violations

    def test_bad_request_id_is_invalid(self, user):
        _, competitors = user()
        error = details_of(lambda: create(competitors, request_id="nope"))
        assert error.code is Code.INVALID_ARGUMENT and "request_id" in error.field_violations

    def test_domain_is_unique_per_user_after_normalization(self, user):
        _, first = user()
        _, second = user()
        name = domain()
        create(first, domain=name)
        error = details_of(lambda: create(first, domain=f"http://www.{name.upper()}/about"))
        assert error.code is Code.ALREADY_EXISTS and "domain" in error.message
        assert create(second, domain=name).domain == name  # another user may watch it too

    def test_retry_with_same_request_id_gives_one_competitor(self, user, database_url):
        account, competitors = user()
        request_id, name = str(uuid.uuid4()), domain()
        with ThreadPoolExecutor(4) as pool:
            made = list(
                pool.map(
                    lambda _: create(competitors, domain=name, request_id=request_id), range(4)
                )
            )
        assert len({c.id for c in made}) == 1
        rows = sql(
            database_url, "SELECT count(*) FROM competitors WHERE user_id = :u", u=account.id
        )
        assert rows[0][0] == 1
        reused = details_of(lambda: create(competitors, domain=domain(), request_id=request_id))
        assert reused.code is Code.INVALID_ARGUMENT and "request_id" in reused.field_violations

    def test_service_must_name_a_user(self, service, user):
        account, _ = user()
        error = details_of(lambda: create(service))
        assert error.code is Code.INVALID_ARGUMENT
        assert "competitor.user_id" in error.field_violations
        assert create(service, user_id=account.id).user_id == account.id
        missing = str(uuid.uuid4())
        assert status_of(lambda: create(service, user_id=missing)) is Code.NOT_FOUND

    def test_user_cannot_create_for_another_user(self, user):
        _, competitors = user()
        other, _ = user()
        assert status_of(lambda: create(competitors, user_id=other.id)) is Code.NOT_FOUND


class TestGetCompetitor:
    def test_gets_own_competitor(self, user):
        _, competitors = user()
        made = create(competitors)
        got = competitors.GetCompetitor(pb.GetCompetitorRequest(id=made.id)).competitor
        assert got == made

    def test_unknown_and_malformed_ids(self, admin):
        missing = pb.GetCompetitorRequest(id=str(uuid.uuid4()))
        assert status_of(lambda: admin.GetCompetitor(missing)) is Code.NOT_FOUND
        error = details_of(lambda: admin.GetCompetitor(pb.GetCompetitorRequest(id="x")))
        assert error.code is Code.INVALID_ARGUMENT and "id" in error.field_violations


class TestListCompetitors:
    def test_pages_newest_first_once_each(self, user):
        _, competitors = user()
        made = [create(competitors).id for _ in range(5)]
        seen, token = [], ""
        while True:
            page = competitors.ListCompetitors(
                pb.ListCompetitorsRequest(page_size=2, page_token=token)
            )
            assert len(page.competitors) <= 2
            seen += [c.id for c in page.competitors]
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(made))

    def test_filters_by_is_active_and_user(self, user, admin):
        account, competitors = user()
        active = create(competitors).id
        inactive = create(competitors, is_active=False).id

        def ids(**filters):
            request = pb.ListCompetitorsRequest(**filters)
            return [c.id for c in admin.ListCompetitors(request).competitors]

        assert ids(user_id=account.id) == [inactive, active]
        assert ids(user_id=account.id, is_active=True) == [active]
        assert ids(user_id=account.id, is_active=False) == [inactive]
        everyone = ids(page_size=1000)
        assert {active, inactive} <= set(everyone)  # admins may list every user's

    def test_token_bound_to_filters_and_tamper_proof(self, user):
        _, competitors = user()
        for _ in range(3):
            create(competitors)
        token = competitors.ListCompetitors(pb.ListCompetitorsRequest(page_size=1)).next_page_token
        assert token
        other = pb.ListCompetitorsRequest(page_size=1, is_active=True, page_token=token)
        assert status_of(lambda: competitors.ListCompetitors(other)) is Code.INVALID_ARGUMENT
        forged = pb.ListCompetitorsRequest(page_size=1, page_token=token[:-2] + "AA")
        assert status_of(lambda: competitors.ListCompetitors(forged)) is Code.INVALID_ARGUMENT

    def test_page_size_rules(self, user):
        _, competitors = user()
        negative = pb.ListCompetitorsRequest(page_size=-1)
        assert status_of(lambda: competitors.ListCompetitors(negative)) is Code.INVALID_ARGUMENT
        create(competitors)
        assert len(competitors.ListCompetitors(pb.ListCompetitorsRequest()).competitors) == 1

    def test_service_may_list_for_a_user(self, service, user):
        account, competitors = user()
        made = create(competitors).id
        listed = service.ListCompetitors(pb.ListCompetitorsRequest(user_id=account.id))
        assert [c.id for c in listed.competitors] == [made]


class TestUpdateCompetitor:
    def test_updates_masked_fields_and_changes_etag(self, user):
        _, competitors = user()
        made = create(competitors, name="Old name")
        new_domain = domain()
        change = pb.Competitor(
            id=made.id,
            domain=f"https://www.{new_domain}/",
            name="ignored",
            check_frequency_hours=12,
            etag=made.etag,
        )
        updated = competitors.UpdateCompetitor(
            pb.UpdateCompetitorRequest(
                competitor=change, update_mask=mask("domain", "check_frequency_hours")
            )
        ).competitor
        assert updated.domain == new_domain and updated.check_frequency_hours == 12
        assert updated.name == "Old name"
        assert updated.etag != made.etag

    def test_deactivate_and_metadata(self, user):
        _, competitors = user()
        made = create(competitors)
        metadata = struct_pb2.Struct()
        metadata.update({"owner": "growth team"})
        updated = competitors.UpdateCompetitor(
            pb.UpdateCompetitorRequest(
                competitor=pb.Competitor(id=made.id, is_active=False, metadata=metadata),
                update_mask=mask("is_active", "metadata"),
            )
        ).competitor
        assert not updated.is_active and dict(updated.metadata) == {"owner": "growth team"}

    def test_stale_etag_is_aborted(self, user):
        _, competitors = user()
        made = create(competitors)
        request = pb.UpdateCompetitorRequest(
            competitor=pb.Competitor(id=made.id, name="first", etag=made.etag),
            update_mask=mask("name"),
        )
        competitors.UpdateCompetitor(request)
        request.competitor.name = "second"
        error = details_of(lambda: competitors.UpdateCompetitor(request))
        assert error.code is Code.ABORTED and error.reason == "CONFLICT"
        got = competitors.GetCompetitor(pb.GetCompetitorRequest(id=made.id)).competitor
        assert got.name == "first"

    @pytest.mark.parametrize(
        "path", ["id", "user_id", "etag", "total_articles_found", "trending_topics", "nonsense"]
    )
    def test_output_only_or_unknown_paths_are_invalid(self, user, path):
        _, competitors = user()
        made = create(competitors)
        request = pb.UpdateCompetitorRequest(
            competitor=pb.Competitor(id=made.id), update_mask=mask(path)
        )
        error = details_of(lambda: competitors.UpdateCompetitor(request))
        assert error.code is Code.INVALID_ARGUMENT and "update_mask" in error.field_violations

    def test_missing_mask_bad_values_and_duplicates(self, user):
        _, competitors = user()
        first, second = create(competitors), create(competitors)

        def update(competitor, *paths):
            request = pb.UpdateCompetitorRequest(competitor=competitor, update_mask=mask(*paths))
            return lambda: competitors.UpdateCompetitor(request)

        assert status_of(update(pb.Competitor(id=first.id))) is Code.INVALID_ARGUMENT
        bad = details_of(update(pb.Competitor(id=first.id, domain="nope"), "domain"))
        assert "competitor.domain" in bad.field_violations
        hours = pb.Competitor(id=first.id, check_frequency_hours=1000)
        bad = details_of(update(hours, "check_frequency_hours"))
        assert "competitor.check_frequency_hours" in bad.field_violations
        clash = details_of(update(pb.Competitor(id=first.id, domain=second.domain), "domain"))
        assert clash.code is Code.ALREADY_EXISTS and "domain" in clash.message


class TestDeleteCompetitor:
    def test_delete_removes_its_articles(self, user, database_url):
        _, competitors = user()
        doomed, kept = create(competitors), create(competitors)
        upsert(competitors, doomed.id, article("https://a.example.com/1"))
        upsert(competitors, kept.id, article("https://a.example.com/1"))
        deleted = competitors.DeleteCompetitor(
            pb.DeleteCompetitorRequest(id=doomed.id, etag=doomed.etag)
        ).competitor
        assert deleted.id == doomed.id and deleted.total_articles_found == 1
        get = pb.GetCompetitorRequest(id=doomed.id)
        assert status_of(lambda: competitors.GetCompetitor(get)) is Code.NOT_FOUND
        counts = sql(
            database_url,
            "SELECT competitor_id::text, count(*) FROM competitor_articles "
            "WHERE competitor_id IN (:a, :b) GROUP BY competitor_id",
            a=doomed.id,
            b=kept.id,
        )
        assert [tuple(r) for r in counts] == [(kept.id, 1)]
        again = pb.DeleteCompetitorRequest(id=doomed.id)
        assert status_of(lambda: competitors.DeleteCompetitor(again)) is Code.NOT_FOUND

    def test_stale_etag_is_aborted(self, user):
        _, competitors = user()
        made = create(competitors)
        competitors.UpdateCompetitor(
            pb.UpdateCompetitorRequest(
                competitor=pb.Competitor(id=made.id, name="changed"), update_mask=mask("name")
            )
        )
        stale = pb.DeleteCompetitorRequest(id=made.id, etag=made.etag)
        assert status_of(lambda: competitors.DeleteCompetitor(stale)) is Code.ABORTED
        assert competitors.GetCompetitor(pb.GetCompetitorRequest(id=made.id)).competitor.id


class TestUpsertArticles:
    def test_counts_created_and_updated_including_in_batch_duplicates(self, user):
        _, competitors = user()
        competitor = create(competitors)
        first = upsert(
            competitors,
            competitor.id,
            article("https://blog.example.com/a?utm_source=x", title="A"),
            article("https://blog.example.com/b"),
            article("https://Blog.Example.com/a#comments", title="A again"),  # same as the 1st
        )
        assert (first.created_count, first.updated_count) == (2, 0)
        second = upsert(
            competitors,
            competitor.id,
            article("https://blog.example.com/b/", title="B"),  # stored already
            article("https://blog.example.com/c"),
            article("https://blog.example.com/c?fbclid=1", title="C"),  # in-batch duplicate
            article("https://blog.example.com/d"),
        )
        assert (second.created_count, second.updated_count) == (2, 1)
        stored = {a.url: a.title for a in list_articles(competitors, competitor.id)}
        assert stored == {
            "https://blog.example.com/a": "A again",
            "https://blog.example.com/b": "B",
            "https://blog.example.com/c": "C",
            "https://blog.example.com/d": "",
        }

    def test_empty_fields_keep_stored_values(self, user):
        _, competitors = user()
        competitor = create(competitors)
        published = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
        url = "https://news.example.com/post"
        upsert(
            competitors,
            competitor.id,
            article(
                url,
                title="First title",
                author="Ann",
                word_count=900,
                publish_date=ts(published),
                main_topics=["SEO ", "  Link   Building"],
                keywords=["seo", "SEO", ""],
            ),
        )
        (stored,) = list_articles(competitors, competitor.id)
        upsert(competitors, competitor.id, article(url, social_shares=40, backlinks=3))
        (merged,) = list_articles(competitors, competitor.id)
        assert merged.title == "First title" and merged.author == "Ann"
        assert merged.word_count == 900 and merged.publish_date.ToDatetime(dt.UTC) == published
        assert list(merged.main_topics) == ["seo", "link building"]
        assert list(merged.keywords) == ["seo"]
        assert (merged.social_shares, merged.backlinks) == (40, 3)
        assert merged.id == stored.id and merged.discover_time == stored.discover_time

    def test_in_batch_merge_is_field_by_field(self, user):
        _, competitors = user()
        competitor = create(competitors)
        url = "https://news.example.com/merge"
        result = upsert(
            competitors,
            competitor.id,
            article(url, title="Draft", author="Bo", keywords=["one"]),
            article(url + "?utm_medium=mail", title="Final", word_count=10),
        )
        assert (result.created_count, result.updated_count) == (1, 0)
        (stored,) = list_articles(competitors, competitor.id)
        assert (stored.title, stored.author, stored.word_count) == ("Final", "Bo", 10)
        assert list(stored.keywords) == ["one"]

    def test_invalid_articles_are_named_and_nothing_is_written(self, user):
        _, competitors = user()
        competitor = create(competitors)
        error = details_of(
            lambda: upsert(
                competitors,
                competitor.id,
                article("https://ok.example.com/1"),
                article("not a url"),
                article("https://ok.example.com/3", word_count=-1),
                article("https://ok.example.com/4", keywords=["k" * 201]),
            )
        )
        assert error.code is Code.INVALID_ARGUMENT
        assert set(error.field_violations) == {
            "articles[1].url",
            "articles[2].word_count",
            "articles[3].keywords",
        }
        assert list_articles(competitors, competitor.id) == []

    def test_batch_limit(self, user):
        _, competitors = user()
        competitor = create(competitors)
        too_many = [article(f"https://bulk.example.com/{i}") for i in range(1001)]
        error = details_of(lambda: upsert(competitors, competitor.id, *too_many))
        assert error.code is Code.INVALID_ARGUMENT and "articles" in error.field_violations
        result = upsert(competitors, competitor.id, *too_many[:1000])
        assert (result.created_count, result.updated_count) == (1000, 0)

    def test_unknown_competitor(self, admin):
        missing = str(uuid.uuid4())
        call = lambda: upsert(admin, missing, article("https://x.example.com/"))  # noqa: E731
        assert status_of(call) is Code.NOT_FOUND


@pytest.fixture(scope="module")
def catalogue(user):
    _, competitors = user()
    competitor = create(competitors)
    day = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    upsert(
        competitors,
        competitor.id,
        *[
            article(
                f"https://cat.example.com/{i}",
                publish_date=ts(day + dt.timedelta(days=i)),
                keywords=["even"] if i % 2 == 0 else ["odd"],
            )
            for i in range(5)
        ],
        article("https://cat.example.com/undated-1", keywords=["even"]),
        article("https://cat.example.com/undated-2"),
    )
    return competitors, competitor.id, day


class TestListArticles:
    def test_newest_publish_date_first_undated_last_across_pages(self, catalogue):
        competitors, competitor_id, _ = catalogue
        paged = list_articles(competitors, competitor_id, page_size=2)
        urls = [a.url.rsplit("/", 1)[1] for a in paged]
        assert urls[:5] == ["4", "3", "2", "1", "0"]
        assert sorted(urls[5:]) == ["undated-1", "undated-2"] and len(urls) == 7
        assert [a.id for a in paged] == [
            a.id for a in list_articles(competitors, competitor_id, page_size=1000)
        ]

    def test_publish_range_and_keyword(self, catalogue):
        competitors, competitor_id, day = catalogue
        ranged = list_articles(
            competitors,
            competitor_id,
            start_publish_time=ts(day + dt.timedelta(days=1)),
            end_publish_time=ts(day + dt.timedelta(days=3)),
        )
        assert [a.url[-1] for a in ranged] == ["2", "1"]
        even = list_articles(competitors, competitor_id, keyword=" EVEN ", page_size=2)
        assert [a.url.rsplit("/", 1)[1] for a in even] == ["4", "2", "0", "undated-1"]

    def test_bad_filters(self, catalogue):
        competitors, competitor_id, day = catalogue
        backwards = pb.ListCompetitorArticlesRequest(
            competitor_id=competitor_id,
            start_publish_time=ts(day),
            end_publish_time=ts(day),
        )
        error = details_of(lambda: competitors.ListCompetitorArticles(backwards))
        assert error.code is Code.INVALID_ARGUMENT
        assert "end_publish_time" in error.field_violations
        token = competitors.ListCompetitorArticles(
            pb.ListCompetitorArticlesRequest(competitor_id=competitor_id, page_size=1)
        ).next_page_token
        other = pb.ListCompetitorArticlesRequest(
            competitor_id=competitor_id, page_size=1, keyword="odd", page_token=token
        )
        assert status_of(lambda: competitors.ListCompetitorArticles(other)) is (
            Code.INVALID_ARGUMENT
        )
        for bad in ("", "nope"):
            request = pb.ListCompetitorArticlesRequest(competitor_id=bad)
            assert status_of(lambda r=request: competitors.ListCompetitorArticles(r)) is (
                Code.INVALID_ARGUMENT
            )


class TestStatistics:
    def test_match_a_hand_computed_fixture(self, user, database_url):
        account, competitors = user()
        watched, other = create(competitors), create(competitors)
        long_ago = ts(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        upsert(
            competitors,
            watched.id,
            article("https://w.example.com/1", main_topics=["SEO", "Content"], keywords=["seo"]),
            article("https://w.example.com/2", main_topics=["seo"], keywords=["ranking"]),
            article("https://w.example.com/3", main_topics=["content"], keywords=["ranking"]),
            article("https://w.example.com/4", main_topics=["stale"], keywords=["seo", "links"]),
            # published long ago but discovered now: still new
            article("https://w.example.com/5", keywords=["beta", "alpha"], publish_date=long_ago),
            article("https://w.example.com/6", keywords=[f"k{i:02}" for i in range(12)]),
        )
        upsert(competitors, other.id, article("https://o.example.com/1", keywords=["seo"]))
        sql(
            database_url,
            "UPDATE competitor_articles SET discover_time = now() - interval '40 days' "
            "WHERE competitor_id = :c AND url = 'https://w.example.com/4'",
            c=watched.id,
        )
        # Over the last 30 days (articles 1, 2, 3, 5, 6), counted once per article:
        # seo 2 (1 twice, 2), content 2 (1, 3), ranking 2 (2, 3); alpha, beta, k00.. 1 each.
        # Article 4 is 40 days old: "stale", "links" and its "seo" do not count.
        expected = [("content", 2), ("ranking", 2), ("seo", 2), ("alpha", 1), ("beta", 1)] + [
            (f"k{i:02}", 1) for i in range(5)
        ]
        got = competitors.GetCompetitor(pb.GetCompetitorRequest(id=watched.id)).competitor
        assert (got.total_articles_found, got.new_articles_30d) == (6, 5)
        assert [(t.topic, t.count) for t in got.trending_topics] == expected

        listed = {
            c.id: c
            for c in competitors.ListCompetitors(
                pb.ListCompetitorsRequest(user_id=account.id)
            ).competitors
        }
        assert listed[watched.id].trending_topics == got.trending_topics
        assert listed[other.id].total_articles_found == 1
        assert [(t.topic, t.count) for t in listed[other.id].trending_topics] == [("seo", 1)]


class TestRecordCheck:
    def test_sets_times_and_error_and_bumps_etag(self, user):
        _, competitors = user()
        made = create(competitors, check_frequency_hours=6)
        checked = now().replace(microsecond=0) - dt.timedelta(hours=1)
        recorded = competitors.RecordCompetitorCheck(
            pb.RecordCompetitorCheckRequest(
                competitor_id=made.id, check_time=ts(checked), error="HTTP 503"
            )
        ).competitor
        assert recorded.last_check_time.ToDatetime(dt.UTC) == checked
        assert recorded.next_check_time.ToDatetime(dt.UTC) == checked + dt.timedelta(hours=6)
        assert recorded.last_error == "HTTP 503" and recorded.etag != made.etag
        cleared = competitors.RecordCompetitorCheck(
            pb.RecordCompetitorCheckRequest(competitor_id=made.id)
        ).competitor
        assert cleared.last_error == ""
        assert abs(cleared.last_check_time.ToDatetime(dt.UTC) - now()) < dt.timedelta(minutes=1)

    def test_invalid_requests(self, user):
        _, competitors = user()
        made = create(competitors)
        cases = {
            "check_time": pb.RecordCompetitorCheckRequest(
                competitor_id=made.id, check_time=ts(now() + dt.timedelta(hours=1))
            ),
            "error": pb.RecordCompetitorCheckRequest(competitor_id=made.id, error="e" * 4001),
            "competitor_id": pb.RecordCompetitorCheckRequest(competitor_id="nope"),
        }
        for field, request in cases.items():
            error = details_of(lambda r=request: competitors.RecordCompetitorCheck(r))
            assert error.code is Code.INVALID_ARGUMENT and field in error.field_violations
        missing = pb.RecordCompetitorCheckRequest(competitor_id=str(uuid.uuid4()))
        assert status_of(lambda: competitors.RecordCompetitorCheck(missing)) is Code.NOT_FOUND


class TestIsolation:
    def test_a_user_cannot_touch_another_users_competitors(self, user, admin):
        _, mine = user()
        owner, theirs = user()
        target = create(theirs)
        upsert(theirs, target.id, article("https://private.example.com/1", title="secret"))
        calls = {
            "Get": lambda: mine.GetCompetitor(pb.GetCompetitorRequest(id=target.id)),
            "ListForOwner": lambda: mine.ListCompetitors(
                pb.ListCompetitorsRequest(user_id=owner.id)
            ),
            "Update": lambda: mine.UpdateCompetitor(
                pb.UpdateCompetitorRequest(
                    competitor=pb.Competitor(id=target.id, name="mine"), update_mask=mask("name")
                )
            ),
            "Delete": lambda: mine.DeleteCompetitor(pb.DeleteCompetitorRequest(id=target.id)),
            "Record": lambda: mine.RecordCompetitorCheck(
                pb.RecordCompetitorCheckRequest(competitor_id=target.id, error="x")
            ),
            "Upsert": lambda: upsert(mine, target.id, article("https://private.example.com/2")),
            "ListArticles": lambda: mine.ListCompetitorArticles(
                pb.ListCompetitorArticlesRequest(competitor_id=target.id)
            ),
        }
        for name, call in calls.items():
            assert status_of(call) is Code.NOT_FOUND, name
        assert list(mine.ListCompetitors(pb.ListCompetitorsRequest()).competitors) == []
        # and nothing changed
        still = admin.GetCompetitor(pb.GetCompetitorRequest(id=target.id)).competitor
        assert still.etag == target.etag and still.name == target.name
        assert [a.title for a in list_articles(admin, target.id)] == ["secret"]


class TestAudit:
    def test_mutations_are_audited(self, user, database_url):
        account, competitors = user()
        made = create(competitors)
        upsert(competitors, made.id, article("https://audit.example.com/1"))
        competitors.DeleteCompetitor(pb.DeleteCompetitorRequest(id=made.id))
        rows = sql(
            database_url,
            "SELECT action, actor_id::text FROM audit_events "
            "WHERE resource_type = 'competitor' AND resource_id = :id ORDER BY id",
            id=made.id,
        )
        assert [tuple(r) for r in rows] == [
            ("competitor.create", account.id),
            ("competitor.upsert_articles", account.id),
            ("competitor.delete", account.id),
        ]

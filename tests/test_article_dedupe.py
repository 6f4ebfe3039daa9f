"""Content dedupe through the real server: if_content_exists on CreateArticle and
BatchCreateArticles (with its ResourceInfo detail, per owner, live articles only, race-free),
and ListArticles' content_hash filter with the index that serves it."""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, users_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from storage.repositories.article_reads import ArticleFilters, list_statement, list_values
from tests.support import SERVICE_KEY, details_of, unique
from tests.test_rls_plans import plan_as_user

Code = grpc.StatusCode
RETURN_EXISTING, FAIL = pb.IF_CONTENT_EXISTS_RETURN_EXISTING, pb.IF_CONTENT_EXISTS_FAIL


def sha256(markdown: str) -> str:
    return hashlib.sha256(markdown.encode()).hexdigest()


def body() -> str:
    return f"# Same words\n\nA paragraph {unique()}."


@pytest.fixture
def fresh(new_account, connect):
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


@pytest.fixture(scope="module")
def service(connect):
    return articles_pb2_grpc.ArticlesServiceStub(connect(SERVICE_KEY))


def create(stub, markdown: str, policy: int = 0, **kwargs) -> pb.Article:
    article = pb.Article(title=kwargs.pop("title", "Dup"), content_markdown=markdown,
                         user_id=kwargs.pop("user_id", ""))  # fmt: skip
    request = pb.CreateArticleRequest(article=article, if_content_exists=policy, **kwargs)
    return stub.CreateArticle(request).article


def with_hash(stub, content_hash: str, **kwargs) -> list[pb.Article]:
    request = pb.ListArticlesRequest(content_hash=content_hash, page_size=100, **kwargs)
    return list(stub.ListArticles(request).articles)


def resource_info(error: grpc.RpcError) -> error_details_pb2.ResourceInfo | None:
    status = rpc_status.from_call(error)  # pyright: ignore[reportArgumentType]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ResourceInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            return info
    return None


def refused(call) -> tuple[grpc.RpcError, error_details_pb2.ResourceInfo | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value, resource_info(caught.value)


class TestCreate:
    def test_create_is_the_default_and_makes_duplicates(self, fresh):
        _, stub = fresh
        markdown = body()
        first = create(stub, markdown)
        second = create(stub, markdown, pb.IF_CONTENT_EXISTS_CREATE)
        assert first.id != second.id and first.content_hash == second.content_hash
        assert len(with_hash(stub, sha256(markdown))) == 2

    def test_return_existing_returns_the_oldest_live_article_and_writes_nothing(self, fresh):
        account, stub = fresh
        markdown = body()
        oldest = create(stub, markdown, title="First")
        create(stub, markdown, title="Second")
        again = create(stub, markdown, RETURN_EXISTING, title="Third")
        assert again.id == oldest.id and again.title == "First"
        assert again.content_markdown == markdown  # the whole article, as Create answers
        assert len(with_hash(stub, sha256(markdown))) == 2
        events = account.stub.ListAuditEvents(
            users_pb2.ListAuditEventsRequest(action="article.create", page_size=100)
        ).events
        assert len(events) == 2  # no event for the call that wrote nothing

    def test_return_existing_creates_when_there_is_none(self, fresh):
        _, stub = fresh
        markdown = body()
        article = create(stub, markdown, RETURN_EXISTING)
        assert article.id and [a.id for a in with_hash(stub, sha256(markdown))] == [article.id]

    def test_fail_names_the_existing_article_in_a_resource_info(self, fresh):
        account, stub = fresh
        markdown = body()
        existing = create(stub, markdown)
        error, info = refused(lambda: create(stub, markdown, FAIL))
        assert error.code() is Code.ALREADY_EXISTS
        assert "content_markdown" in error.details() and existing.id in error.details()
        assert info is not None
        assert (info.resource_type, info.resource_name) == ("article", existing.id)
        assert info.owner == f"user:{account.id}"
        assert details_of(lambda: create(stub, markdown, FAIL)).reason == "ALREADY_EXISTS"
        assert len(with_hash(stub, sha256(markdown))) == 1

    def test_fail_creates_when_the_content_is_new(self, fresh):
        _, stub = fresh
        assert create(stub, body(), FAIL).id

    def test_soft_deleted_articles_are_not_matched(self, fresh):
        _, stub = fresh
        markdown = body()
        gone = create(stub, markdown)
        stub.DeleteArticle(pb.DeleteArticleRequest(id=gone.id))
        new = create(stub, markdown, RETURN_EXISTING)
        assert new.id != gone.id
        error, info = refused(lambda: create(stub, markdown, FAIL))
        assert error.code() is Code.ALREADY_EXISTS and info and info.resource_name == new.id

    def test_owners_are_separate(self, fresh, new_account, connect, service):
        ann, ann_stub = fresh
        bob = new_account()
        bob_stub = articles_pb2_grpc.ArticlesServiceStub(connect(bob.token))
        markdown = body()
        anns = create(ann_stub, markdown)
        bobs = create(bob_stub, markdown, RETURN_EXISTING)
        assert bobs.id != anns.id and bobs.user_id == bob.id
        assert create(bob_stub, markdown, RETURN_EXISTING).id == bobs.id
        # A service acting for each user gets that user's article, never the other's.
        assert create(service, markdown, RETURN_EXISTING, user_id=ann.id).id == anns.id
        assert create(service, markdown, RETURN_EXISTING, user_id=bob.id).id == bobs.id
        # Bob's list by the hash holds only Bob's article.
        assert [a.id for a in with_hash(bob_stub, sha256(markdown))] == [bobs.id]

    def test_an_unknown_option_is_invalid(self, fresh):
        _, stub = fresh
        error = details_of(lambda: create(stub, body(), 99))
        assert error.code is Code.INVALID_ARGUMENT and "if_content_exists" in error.field_violations

    def test_a_retry_with_the_request_id_returns_the_first_result(self, fresh):
        _, stub = fresh
        markdown, request_id = body(), str(uuid.uuid4())
        first = create(stub, markdown, FAIL, request_id=request_id)
        retry = create(stub, markdown, FAIL, request_id=request_id)  # not ALREADY_EXISTS
        assert retry.id == first.id
        assert len(with_hash(stub, sha256(markdown))) == 1


class TestConcurrency:
    THREADS = 8

    def _race(self, stub, markdown: str, policy: int) -> list[pb.Article | grpc.RpcError]:
        barrier = threading.Barrier(self.THREADS)

        def one(_: int) -> pb.Article | grpc.RpcError:
            barrier.wait()
            try:
                return create(stub, markdown, policy)
            except grpc.RpcError as error:
                return error

        with ThreadPoolExecutor(self.THREADS) as pool:
            return list(pool.map(one, range(self.THREADS)))

    def test_identical_creates_with_return_existing_make_one_article(self, fresh):
        _, stub = fresh
        markdown = body()
        results = self._race(stub, markdown, RETURN_EXISTING)
        assert all(isinstance(r, pb.Article) for r in results), results
        assert len({r.id for r in results if isinstance(r, pb.Article)}) == 1
        assert len(with_hash(stub, sha256(markdown))) == 1

    def test_identical_creates_with_fail_make_one_and_refuse_the_rest(self, fresh):
        _, stub = fresh
        markdown = body()
        results = self._race(stub, markdown, FAIL)
        made = [r for r in results if isinstance(r, pb.Article)]
        errors = [r for r in results if isinstance(r, grpc.RpcError)]
        assert len(made) == 1 and len(errors) == self.THREADS - 1
        assert {e.code() for e in errors} == {Code.ALREADY_EXISTS}
        assert {(info := resource_info(e)) and info.resource_name for e in errors} == {made[0].id}
        assert [a.id for a in with_hash(stub, sha256(markdown))] == [made[0].id]


def batch(stub, markdowns: list[str], policy: int, **kwargs) -> list[pb.Article]:
    articles = [pb.Article(title=f"Item {i}", content_markdown=m) for i, m in enumerate(markdowns)]
    request = pb.BatchCreateArticlesRequest(articles=articles, if_content_exists=policy, **kwargs)
    return list(stub.BatchCreateArticles(request).articles)


class TestBatch:
    def test_return_existing_returns_earlier_items_and_existing_articles(self, fresh):
        _, stub = fresh
        old, a, b = body(), body(), body()
        existing = create(stub, old)
        made = batch(stub, [a, b, a, old, b], RETURN_EXISTING)
        assert made[2].id == made[0].id and made[4].id == made[1].id
        assert made[3].id == existing.id
        assert len({m.id for m in made}) == 3
        assert [x.id for x in with_hash(stub, sha256(a))] == [made[0].id]
        assert [x.id for x in with_hash(stub, sha256(b))] == [made[1].id]

    def test_fail_on_a_repeat_inside_the_batch_names_both_items(self, fresh):
        _, stub = fresh
        a, b = body(), body()
        error, info = refused(lambda: batch(stub, [a, b, a], FAIL))
        assert error.code() is Code.ALREADY_EXISTS and "articles[2]" in error.details()
        assert info is not None and info.resource_name == "articles[0]"
        assert with_hash(stub, sha256(a)) == [] and with_hash(stub, sha256(b)) == []

    def test_fail_on_existing_content_names_the_item_and_the_article(self, fresh):
        _, stub = fresh
        old, new = body(), body()
        existing = create(stub, old)
        error, info = refused(lambda: batch(stub, [new, old], FAIL))
        assert error.code() is Code.ALREADY_EXISTS and "articles[1]" in error.details()
        assert info is not None and info.resource_name == existing.id
        assert with_hash(stub, sha256(new)) == []  # all or nothing

    def test_create_keeps_every_item(self, fresh):
        _, stub = fresh
        a = body()
        made = batch(stub, [a, a], pb.IF_CONTENT_EXISTS_UNSPECIFIED)
        assert made[0].id != made[1].id

    def test_a_retried_batch_returns_the_first_result(self, fresh):
        _, stub = fresh
        a, b = body(), body()
        request_id = str(uuid.uuid4())
        first = batch(stub, [a, b, a], RETURN_EXISTING, request_id=request_id)
        again = batch(stub, [a, b, a], RETURN_EXISTING, request_id=request_id)
        assert [x.id for x in again] == [x.id for x in first]
        assert len(with_hash(stub, sha256(a))) == 1

    def test_concurrent_batches_with_return_existing_share_one_article(self, fresh):
        _, stub = fresh
        shared = body()
        barrier = threading.Barrier(2)

        def one(_: int) -> list[pb.Article]:
            barrier.wait()
            return batch(stub, [body(), shared], RETURN_EXISTING)

        with ThreadPoolExecutor(2) as pool:  # the tests' batch share per principal is 2
            results = list(pool.map(one, range(2)))
        assert len({r[1].id for r in results}) == 1
        assert len(with_hash(stub, sha256(shared))) == 1


class TestContentHashFilter:
    def test_lists_the_articles_with_the_hash_in_either_case(self, fresh):
        _, stub = fresh
        markdown = body()
        same = [create(stub, markdown) for _ in range(3)]
        create(stub, body())
        digest = sha256(markdown)
        assert {a.id for a in with_hash(stub, digest)} == {a.id for a in same}
        assert {a.id for a in with_hash(stub, digest.upper())} == {a.id for a in same}
        assert all(a.content_hash == digest for a in with_hash(stub, digest))
        assert with_hash(stub, sha256("never written")) == []

    def test_deleted_articles_only_with_show_deleted(self, fresh):
        _, stub = fresh
        markdown = body()
        gone = create(stub, markdown)
        stub.DeleteArticle(pb.DeleteArticleRequest(id=gone.id))
        assert with_hash(stub, sha256(markdown)) == []
        assert [a.id for a in with_hash(stub, sha256(markdown), show_deleted=True)] == [gone.id]

    @pytest.mark.parametrize("bad", ["abc", "g" * 64, "a" * 63, "a" * 65, "é" * 64])
    def test_a_malformed_hash_is_invalid_argument_naming_the_field(self, fresh, bad):
        _, stub = fresh
        error = details_of(lambda: with_hash(stub, bad))
        assert error.code is Code.INVALID_ARGUMENT and "content_hash" in error.field_violations

    def test_pages_are_bound_to_the_hash(self, fresh):
        _, stub = fresh
        markdown = body()
        made = {create(stub, markdown).id for _ in range(3)}
        seen, token = [], ""
        while True:
            page = stub.ListArticles(pb.ListArticlesRequest(
                content_hash=sha256(markdown), page_size=1, page_token=token))  # fmt: skip
            seen += [a.id for a in page.articles]
            if not (token := page.next_page_token):
                break
            other = pb.ListArticlesRequest(content_hash=sha256("x"), page_size=1, page_token=token)
            assert details_of(lambda r=other: stub.ListArticles(r)).code is Code.INVALID_ARGUMENT
        assert sorted(seen) == sorted(made)

    def test_another_users_hash_lists_nothing(self, fresh, new_account, connect):
        _, stub = fresh
        markdown = body()
        create(stub, markdown)
        other = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
        assert with_hash(other, sha256(markdown)) == []


def test_the_content_hash_list_uses_its_index_under_rls(database_url, owner_engine):
    """A user with 500 articles of distinct content: the list by hash reads
    ix_articles_content_hash_user_id, not the owner's create_time index."""
    with owner_engine.begin() as connection:
        user_id = connection.scalar(
            text(
                "INSERT INTO users (email, username, password_hash) "
                "VALUES (:e, :n, 'x') RETURNING id"
            ),
            {"e": f"{unique()}@example.com", "n": unique()},
        )
        connection.execute(
            text(
                "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
                "word_count, reading_time_minutes, internal_links, external_links, content_hash) "
                "SELECT :u, 'title ' || i, 'dedupe-' || i, 'body ' || i, 'body', 2, 1, 0, 0, "
                "encode(sha256(('body ' || i)::bytea), 'hex') FROM generate_series(1, 500) i"
            ),
            {"u": user_id},
        )
        connection.execute(text("ANALYZE articles"))
    filters = ArticleFilters(content_hash=sha256("body 7"))
    for order_by in ("create_time desc", "title"):
        plan = plan_as_user(
            database_url,
            user_id,
            list_statement(filters, user_id, order_by=order_by, after=None, full=False),
            list_values(filters, user_id, None, 50),
        )
        assert "ix_articles_content_hash_user_id" in plan, plan

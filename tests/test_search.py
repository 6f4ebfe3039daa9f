"""SearchArticles: web-search syntax, ranking, snippets, paging and hostile queries."""

from __future__ import annotations

import grpc
import psycopg2
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench import dblimit
from storage.engine import libpq_dsn
from storage.queries import _prepare
from storage.repositories.article_reads import (
    PHRASE_SCOPE,
    PHRASE_WINDOW,
    ArticleFilters,
    search_rank_statement,
)
from tests.support import status_of


@pytest.fixture(scope="module")
def library(new_account, connect):
    """One user's articles, written so each query below has a known answer."""
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    texts = {
        "title_hit": ("Composting for beginners", "A short note on gardens."),
        "body_hit": ("Garden diary", "composting " * 40 + "every week in the garden."),
        "phrase": ("Quick notes", "The quick brown fox jumps over the lazy sheep."),
        "split": ("Other notes", "The fox was quick, and brown leaves fell."),
        "cats": ("Pets", "Cats sleep all day."),
        "dogs": ("More pets", "Dogs bark at night."),
        "apples": ("Fruit", "Apples and bananas in a bowl."),
        "apples_only": ("Orchard", "Apples on the tree."),
        "markup": ("Escaping", "Use `<script>alert('x')</script>` carefully with compost."),
    }
    ids = {}
    for key, (title, body) in texts.items():
        article = pb.Article(title=title, content_markdown=body, tags=[key])
        ids[key] = stub.CreateArticle(pb.CreateArticleRequest(article=article)).article.id
    return stub, ids


def search(stub, query: str, **kwargs) -> list[pb.SearchResult]:
    return list(stub.SearchArticles(pb.SearchArticlesRequest(query=query, **kwargs)).results)


def test_title_match_outranks_a_body_only_match(library):
    stub, ids = library
    results = search(stub, "composting")
    assert results[0].article.id == ids["title_hit"]
    assert ids["body_hit"] in [r.article.id for r in results[1:]]
    assert results[0].rank > max(r.rank for r in results[1:])
    assert all(not r.article.content_markdown for r in results)  # BASIC view


def test_quoted_phrase_needs_adjacent_words(library):
    stub, ids = library
    assert {r.article.id for r in search(stub, "quick brown fox")} == {ids["phrase"], ids["split"]}
    assert [r.article.id for r in search(stub, '"quick brown fox"')] == [ids["phrase"]]


def test_negated_phrase_and_phrase_with_a_negated_word(library):
    stub, ids = library
    assert [r.article.id for r in search(stub, 'fox -"quick brown"')] == [ids["split"]]
    assert [r.article.id for r in search(stub, '"quick brown" -cats')] == [ids["phrase"]]
    assert search(stub, '"quick brown" -sheep') == []
    assert [r.article.id for r in search(stub, '"quick brown" -"lazy cat"')] == [ids["phrase"]]
    assert search(stub, '"quick brown" -"lazy sheep"') == []


def test_a_phrase_is_tested_in_the_newest_window_of_articles_with_its_words(new_account, connect):
    """The documented bound: older phrase matches are not found once PHRASE_WINDOW newer
    articles hold the phrase's words apart."""
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))

    def create(body: str) -> str:
        article = pb.Article(title="Birds", content_markdown=body)
        return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article.id

    oldest = create("An amber falcon at dawn.")
    middle = create("The falcon, amber in the light.")
    newest = create("Another amber falcon.")
    assert [r.article.id for r in search(stub, '"amber falcon"')] == [newest, oldest]
    apart = [pb.Article(title=f"Birds {i}", content_markdown="A falcon over amber fields.")
             for i in range(PHRASE_WINDOW - 1)]  # fmt: skip
    stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=apart))
    newer = create("One more amber falcon.")
    # The newest PHRASE_WINDOW articles with both words: newer and the batch.
    assert [r.article.id for r in search(stub, '"amber falcon"')] == [newer]
    assert middle not in [r.article.id for r in search(stub, "amber falcon", page_size=100)]


def test_a_phrase_is_looked_for_in_the_newest_articles_in_scope(
    new_account, connect, admin_key, settings
):
    """The other bound: a phrase search starts PHRASE_SCOPE articles back, counted in the
    caller's scope (everyone's, for an admin); plain words are searched further."""
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
    admin = articles_pb2_grpc.ArticlesServiceStub(connect(admin_key))

    def create(body: str) -> pb.Article:
        article = pb.Article(title="Herons", content_markdown=body)
        return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article

    first = create("A cobalt heron by the lake.")
    oldest = first.id
    for batch in range(PHRASE_SCOPE // 1000):
        notes = [pb.Article(title=f"Note {batch}-{i}", content_markdown="Nothing here.")
                 for i in range(1000)]  # fmt: skip
        stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=notes))
    assert search(stub, '"cobalt heron"') == []
    assert [r.article.id for r in search(stub, "cobalt heron")] == [oldest]
    assert [r.article.id for r in search(stub, '"heron"')] == [oldest]  # a word, not a phrase
    assert search(stub, 'heron -"lake heron"') == []  # a negated phrase bounds it too
    assert search(stub, "-nothing") == []  # and so do negations alone
    # The scope is counted after the filters, so a time range reaches older phrases.
    until = Timestamp()
    until.FromNanoseconds(first.create_time.ToNanoseconds() + 1000)
    assert [r.article.id for r in search(stub, '"cobalt heron"', end_create_time=until)] == [oldest]
    newest = create("Another cobalt heron.").id
    for caller in (stub, admin):
        assert [r.article.id for r in search(caller, '"cobalt heron"')] == [newest]
    # The benchmark's database limit issues the same SQL, as a service (everyone's articles).
    dsn = libpq_dsn(settings.direct_url)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        assert [str(row[0]) for row in dblimit.search(cur, '"cobalt heron"')] == [newest]


def test_or_and_exclusion(library):
    stub, ids = library
    assert {r.article.id for r in search(stub, "cats OR dogs")} == {ids["cats"], ids["dogs"]}
    assert [r.article.id for r in search(stub, "apples -bananas")] == [ids["apples_only"]]


def test_snippet_highlights_and_escapes_markup(library):
    stub, ids = library
    (hit,) = [r for r in search(stub, "compost") if r.article.id == ids["markup"]]
    assert "<b>compost</b>" in hit.snippet
    assert "script&gt;" in hit.snippet  # the code span's markup is there, escaped
    assert "<" not in hit.snippet.replace("<b>", "").replace("</b>", "")


def test_rank_order_is_title_then_other_fields_then_content_newest_first(new_account, connect):
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
    specs = [  # created oldest first
        ("keyword", pb.Article(title="One", content_markdown="x", primary_keyword="lantern")),
        ("title", pb.Article(title="The lantern guide", content_markdown="x")),
        ("old_body", pb.Article(title="Two", content_markdown="a lantern " * 30)),
        ("new_body", pb.Article(title="Three", content_markdown="a lantern here")),
        ("excerpt", pb.Article(title="Four", content_markdown="x", excerpt="On the lantern.")),
    ]
    ids = {}
    for key, article in specs:
        ids[stub.CreateArticle(pb.CreateArticleRequest(article=article)).article.id] = key
    results = search(stub, "lantern")
    order = [ids[r.article.id] for r in results]
    assert order[0] == "title"
    assert set(order[1:3]) == {"keyword", "excerpt"}
    # Content-only hits tie at rank 0 and come newest first, however often the word occurs.
    assert order[3:] == ["new_body", "old_body"]
    assert results[3].rank == results[4].rank == 0
    assert results[2].rank > 0


def test_snippet_shows_a_term_that_first_occurs_deep_in_the_content(new_account, connect):
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
    filler = "Plain words about gardens and weather fill this paragraph. " * 150  # ~9,000 chars
    body = filler + "Then a zeppelin appeared over the hill."
    created = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
        title="Long read", content_markdown=body, excerpt="A long article.",
    ))).article  # fmt: skip
    (hit,) = search(stub, "zeppelins")  # stemmed: zeppelins -> zeppelin
    assert hit.article.id == created.id
    assert "<b>zeppelin</b> appeared" in hit.snippet


def test_filters_apply(library):
    stub, ids = library
    assert [r.article.id for r in search(stub, "composting", tag="body_hit")] == [ids["body_hit"]]


def test_paging_returns_every_match_once_in_rank_order(library):
    stub, _ = library
    everything = search(stub, "notes OR pets OR fruit OR orchard OR garden", page_size=100)
    seen, ranks, token = [], [], ""
    while True:
        response = stub.SearchArticles(
            pb.SearchArticlesRequest(
                query="notes OR pets OR fruit OR orchard OR garden", page_size=2, page_token=token
            )
        )
        seen += [r.article.id for r in response.results]
        ranks += [r.rank for r in response.results]
        if not (token := response.next_page_token):
            break
    assert seen == [r.article.id for r in everything] and len(seen) == len(set(seen)) >= 6
    assert ranks == sorted(ranks, reverse=True)
    first = stub.SearchArticles(pb.SearchArticlesRequest(query="garden", page_size=1))
    assert first.next_page_token
    mismatched = pb.SearchArticlesRequest(query="pets", page_token=first.next_page_token)
    assert status_of(lambda: stub.SearchArticles(mismatched)) is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE articles; --",
        "%_\\",
        "&|!():*<->",
        "fox <-> quick",
        '"unterminated phrase',
        "OR OR OR",
        "-",
        "\u0000 zero byte",
        "ünïcödé 日本語",
        "a" * 1000,
        " ".join(["fox"] * 250),
    ],
)
def test_hostile_queries_answer_cleanly(library, query):
    stub, _ = library
    try:
        search(stub, query)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error


def test_empty_stop_word_and_oversized_queries(library):
    stub, _ = library
    assert status_of(lambda: search(stub, "   ")) is grpc.StatusCode.INVALID_ARGUMENT
    assert search(stub, "the and of") == []
    assert status_of(lambda: search(stub, "x" * 1001)) is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("query", ["seo", '"seo tips"', 'seo -"bad tips"', "-seo"])
def test_the_rank_statement_folds_the_functions_of_its_query(settings, app, query):
    """Its bounds are CASEs on functions of :query that PostgreSQL must fold when it plans
    with the value; if they stay in the plan, no index is used and a search walks the table
    (a text parameter cast to regconfig once blocked this)."""
    statement = search_rank_statement(ArticleFilters(), None, after=False, phrase_since=False)
    prepared = _prepare("fold_check", statement)
    values = {**prepared.constants, "query": query, "limit": 21}
    dsn = libpq_dsn(settings.direct_url)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"PREPARE fold_check ({', '.join(prepared.types)}) AS {prepared.body}")
        cur.execute("SET plan_cache_mode = force_custom_plan")
        args = ", ".join(["%s"] * len(prepared.params))
        cur.execute(f"EXPLAIN (VERBOSE) EXECUTE fold_check ({args})",
                    [values[p] for p in prepared.params])  # fmt: skip
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "websearch_to_tsquery" not in plan
    assert "CASE WHEN (strpos" not in plan

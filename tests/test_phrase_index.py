"""The optional phrase index (storage/phrase_index.py): GIN over (search_vector, create_time).

Searches must answer the same with it as with the single-column fallback (phrases, negated
phrases, the PHRASE_SCOPE bound, time ranges and other filters), and a bounded phrase
search must read the index with its create_time range. Where `btree_gin` is missing (the
embedded PostgreSQL) only the fallback is checked.
"""

from __future__ import annotations

import argparse

import psycopg2
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine

from server.commands.phrase_index import enable_phrase_index_command
from storage import phrase_index
from storage.engine import libpq_dsn, normalize_url
from storage.queries import _prepare
from storage.repositories.article_reads import PHRASE_SCOPE, ArticleFilters, search_rank_statement

QUERIES = [
    '"cobalt heron"', '"heron cobalt"', 'heron -"lake heron"', '"cobalt heron" -lake',
    '"cobalt heron" -"lake shore"', 'lake -"cobalt heron"', "-nothing", "cobalt heron",
    '"quiet lake" | "cobalt heron"', "heron",
]  # fmt: skip


@pytest.fixture(scope="module")
def engine(settings):
    engine = create_engine(normalize_url(settings.direct_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def herons(new_account, connect, admin_key):
    """Phrase matches older and newer than PHRASE_SCOPE articles, with the words apart in
    between; a user's stub and an admin's (everyone's articles)."""
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
    admin = articles_pb2_grpc.ArticlesServiceStub(connect(admin_key))

    def create(body: str, tags: list[str]) -> pb.Article:
        article = pb.Article(title="Herons", content_markdown=body, tags=tags)
        return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article

    old = [create("A cobalt heron by the lake.", ["old"]), create("Heron cobalt.", ["old"])]
    for batch in range(PHRASE_SCOPE // 1000):
        notes = [pb.Article(title=f"Note {batch}-{i}", content_markdown=body, tags=["note"])
                 for i, body in enumerate(["Nothing here.", "A heron, cobalt blue, by the "
                                           "quiet lake shore."] * 500)]  # fmt: skip
        stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=notes))
    new = [create("Another cobalt heron at the lake shore.", ["new"]),
           create("A cobalt heron, and a quiet lake.", ["new"])]  # fmt: skip
    return stub, admin, old, new


def _answers(herons) -> list:
    stub, admin, old, _ = herons
    until = Timestamp()
    until.FromNanoseconds(old[-1].create_time.ToNanoseconds() + 1000)
    requests = [
        pb.SearchArticlesRequest(query=q, page_size=50, **kw)
        for q in QUERIES
        for kw in ({}, {"end_create_time": until}, {"tag": "new"}, {"tag": "note"})
    ]
    return [
        [(r.article.id, round(r.rank, 6)) for r in caller.SearchArticles(request).results]
        for caller in (stub, admin)
        for request in requests
    ]


def test_searches_answer_the_same_with_and_without_the_index(herons, engine):
    with engine.begin() as connection:
        phrase_index.drop(connection)
        assert not phrase_index.enabled(connection)
    fallback = _answers(herons)
    _, _, old, new = herons
    found = [{i for i, _ in answer} for answer in fallback]
    assert {new[0].id, new[1].id} in found  # the newest phrases
    assert {old[0].id} in found  # and an old one, reached through a time range
    try:
        with engine.begin() as connection:
            phrase_index.ensure(connection)
    except RuntimeError as error:
        pytest.skip(f"no phrase index here: {error}")
    assert _answers(herons) == fallback


def test_a_bounded_phrase_search_reads_the_index_with_its_time_range(herons, engine, settings):
    """Through the command; where btree_gin is missing it refuses and changes nothing."""
    with engine.begin() as connection:
        phrase_index.drop(connection)
        available = connection.exec_driver_sql(
            f"SELECT 1 FROM pg_available_extensions WHERE name = '{phrase_index.EXTENSION}'"
        ).scalar()
    args = argparse.Namespace(data_dir=None)
    if not available:
        assert enable_phrase_index_command(args, settings) == 1
        pytest.skip("no btree_gin here: the command refuses, searches keep the fallback")
    assert enable_phrase_index_command(args, settings) == 0
    assert enable_phrase_index_command(args, settings) == 0  # safe to run again
    with engine.begin() as connection:
        assert phrase_index.enabled(connection)
        fallback = f"SELECT to_regclass('{phrase_index.FALLBACK_INDEX}')"
        # Replaced, not added: one GIN index to keep up on writes.
        assert connection.exec_driver_sql(fallback).scalar() is None
    _, _, old, _ = herons
    since = old[-1].create_time.ToDatetime()
    statement = search_rank_statement(ArticleFilters(), None, after=False, phrase_since=True)
    prepared = _prepare("phrase_index_check", statement)
    values = {**prepared.constants, "query": '"cobalt heron"', "limit": 21, "phrase_since": since}
    dsn = libpq_dsn(settings.direct_url)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE articles")
        cur.execute(f"PREPARE phrase_index_check ({', '.join(prepared.types)}) AS {prepared.body}")
        cur.execute("SET plan_cache_mode = force_custom_plan")
        args = ", ".join(["%s"] * len(prepared.params))
        cur.execute(
            f"EXPLAIN EXECUTE phrase_index_check ({args})", [values[p] for p in prepared.params]
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert f"Bitmap Index Scan on {phrase_index.INDEX}" in plan, plan
    index_cond = plan.split(f"on {phrase_index.INDEX}")[1].split("\n")[1]
    assert "create_time >=" in index_cond and "@@" in index_cond, plan

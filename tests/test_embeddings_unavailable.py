"""Embeddings on a PostgreSQL without pgvector (Debian's 15 here): migrations succeed, the
embedding calls answer FAILED_PRECONDITION naming the extension, everything else works, and
health stays SERVING. tests/test_embeddings.py covers the server with it."""

from __future__ import annotations

import argparse

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, competitors_pb2_grpc
from blogstore.v1 import competitors_pb2 as cpb
from blogstore.v1 import embeddings_pb2 as epb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.commands.embeddings import enable_embeddings_command
from storage import embeddings
from tests.support import details_of, unique

Code = grpc.StatusCode
VECTOR = epb.Embedding(model="m", values=[1.0] * embeddings.DEFAULT_DIMENSIONS)


@pytest.fixture(scope="module", autouse=True)
def _without_pgvector(owner_engine):
    with owner_engine.connect() as conn:
        if embeddings.extension_available(conn):
            pytest.skip("this test server has pgvector: see tests/test_embeddings.py")


@pytest.fixture(scope="module")
def me(new_account, connect):
    channel = connect(new_account().token)
    return (
        articles_pb2_grpc.ArticlesServiceStub(channel),
        competitors_pb2_grpc.CompetitorsServiceStub(channel),
    )


def _refused(call) -> None:
    details = details_of(call)
    assert details.code == Code.FAILED_PRECONDITION
    assert '"vector"' in details.message and "pgvector" in details.message


def test_migrated_to_head_without_the_tables(owner_engine, settings, capsys):
    with owner_engine.connect() as conn:
        for table in embeddings.TABLES:
            assert embeddings.column_dimensions(conn, table) is None
    assert enable_embeddings_command(argparse.Namespace(), settings) == 1
    assert '"vector" extension (pgvector)' in capsys.readouterr().err


def test_embedding_calls_are_failed_precondition_naming_the_extension(me, target):
    articles, competitors = me
    article = articles.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title=unique("t")))
    ).article  # without an embedding: as ever
    _refused(lambda: articles.FindSimilarArticles(pb.FindSimilarArticlesRequest(embedding=VECTOR)))
    _refused(
        lambda: articles.FindSimilarArticles(pb.FindSimilarArticlesRequest(article_id=article.id))
    )
    item = pb.EmbeddingItem(article_id=article.id, embedding=VECTOR)
    _refused(lambda: articles.SetEmbeddings(pb.SetEmbeddingsRequest(items=[item])))
    title = unique("t")
    _refused(
        lambda: articles.CreateArticle(
            pb.CreateArticleRequest(article=pb.Article(title=title, embedding=VECTOR))
        )
    )
    listed = articles.ListArticles(pb.ListArticlesRequest()).articles
    assert [a.id for a in listed] == [article.id]  # the refused create wrote nothing
    competitor = competitors.CreateCompetitor(
        cpb.CreateCompetitorRequest(competitor=cpb.Competitor(domain=f"{unique('c')}.example"))
    ).competitor
    _refused(
        lambda: competitors.UpsertCompetitorArticles(
            cpb.UpsertCompetitorArticlesRequest(
                competitor_id=competitor.id,
                articles=[cpb.CompetitorArticle(url="https://c.example/a", embedding=VECTOR)],
            )
        )
    )
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "blogstore.v1.ArticlesService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_bad_input_is_still_invalid_argument_first(me):
    articles, _ = me
    details = details_of(
        lambda: articles.FindSimilarArticles(
            pb.FindSimilarArticlesRequest(embedding=epb.Embedding(model="m", values=[1.0]))
        )
    )
    assert details.code == Code.INVALID_ARGUMENT and "embedding.values" in details.field_violations

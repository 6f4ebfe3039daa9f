"""Embeddings and similarity (pgvector) through the real server.

These need the `vector` extension: on a test server without it (Debian's PostgreSQL 15) the
module runs on an embedded pgserver of its own, which ships pgvector (started in a temp dir;
pgserver runs PostgreSQL as its own system user when the tests run as root).
tests/test_embeddings_unavailable.py covers the server without it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, competitors_pb2_grpc
from blogstore.v1 import competitors_pb2 as cpb
from blogstore.v1 import embeddings_pb2 as epb
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, text

from server.commands.embeddings import enable_embeddings_command
from storage import embeddings, migrate
from storage.engine import normalize_url
from storage.repositories import embeddings as embedding_repository
from tests import support
from tests.support import details_of, status_of, unique

Code = grpc.StatusCode
DIM = embeddings.DEFAULT_DIMENSIONS
MODEL = "text-embedding-3-small"


def _has_vector(admin_url: str) -> bool:
    engine = support.admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            return embeddings.extension_available(conn)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _vector_server(pg_admin_url: str) -> Iterator[str]:
    """The test server if it has pgvector, else an embedded pgserver (which ships it)."""
    if _has_vector(pg_admin_url):
        yield pg_admin_url
        return
    import pgserver

    data_dir = Path(tempfile.mkdtemp(prefix="blogstore-test-pgvector-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")  # pyright: ignore[reportPrivateImportUsage]
    yield server.get_uri("postgres")


@pytest.fixture(scope="module")
def vector_admin_url(pg_admin_url: str) -> Iterator[str]:
    with _vector_server(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def database_url(vector_admin_url: str) -> Iterator[str]:
    """Overrides conftest's: a database migrated to head on the server with pgvector."""
    url = support.create_database(vector_admin_url)
    migrate.upgrade(url)
    yield url
    support.drop_database(vector_admin_url, url)


# -- helpers ---------------------------------------------------------------------------------
def f32(values: list[float]) -> list[float]:
    """The values as the wire carries them (float32)."""
    return list(epb.Embedding(values=values).values)


def random_vector(rng: random.Random) -> list[float]:
    return f32([rng.gauss(0, 1) for _ in range(DIM)])


def near(base: list[float], noise: float, rng: random.Random) -> list[float]:
    return f32([x + rng.gauss(0, noise) for x in base])


def cosine_distance(a: list[float], b: list[float]) -> float:
    """The exact distance in Python (no numpy): 1 - a.b / (|a| |b|)."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return 1 - dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def embedding(values: list[float], model: str = MODEL) -> epb.Embedding:
    return epb.Embedding(model=model, values=values)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


class User:
    def __init__(self, account, connect) -> None:
        self.account = account
        channel = connect(account.token)
        self.articles = articles_pb2_grpc.ArticlesServiceStub(channel)
        self.competitors = competitors_pb2_grpc.CompetitorsServiceStub(channel)

    def create(self, vector: list[float] | None = None, model: str = MODEL) -> pb.Article:
        article = pb.Article(title=unique("article"), content_markdown="words")
        if vector is not None:
            article.embedding.CopyFrom(embedding(vector, model))
        return self.articles.CreateArticle(pb.CreateArticleRequest(article=article)).article

    def similar(self, **fields) -> pb.FindSimilarArticlesResponse:
        return self.articles.FindSimilarArticles(pb.FindSimilarArticlesRequest(**fields))

    def set(self, *items: pb.EmbeddingItem) -> pb.SetEmbeddingsResponse:
        return self.articles.SetEmbeddings(pb.SetEmbeddingsRequest(items=list(items)))


def ids(response: pb.FindSimilarArticlesResponse) -> list[str]:
    return [
        r.article.id if r.HasField("article") else r.competitor_article.id for r in response.results
    ]


@pytest.fixture(scope="module")
def user(new_account, connect):
    return lambda: User(new_account(), connect)


@pytest.fixture(scope="module")
def admin_articles(connect, admin_key):
    return articles_pb2_grpc.ArticlesServiceStub(connect(admin_key))


# -- tests -----------------------------------------------------------------------------------
def test_schema_has_hnsw_cosine_indexes_and_row_level_security(owner_engine):
    with owner_engine.connect() as conn:
        for table in embeddings.TABLES:
            assert embeddings.column_dimensions(conn, table) == DIM
            indexdef = conn.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes "
                    "WHERE tablename = :t AND indexdef LIKE '%hnsw%'"
                ),
                {"t": table},
            )
            assert "vector_cosine_ops" in indexdef
            rls_on = conn.scalar(
                text("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": table},
            )
            policies = set(
                conn.scalars(
                    text("SELECT policyname FROM pg_policies WHERE tablename = :t"), {"t": table}
                )
            )
            assert rls_on and policies == {"blogstore_owner", "blogstore_all"}


def test_nearest_first_with_exact_distances_limit_and_max_distance(user):
    rng = random.Random(1)
    me = user()
    query = random_vector(rng)
    vectors = [near(query, noise, rng) for noise in (0.2, 0.5, 0.8, 1.2, 2.0, 3.0)]
    vectors += [random_vector(rng) for _ in range(6)]
    articles = [me.create(v) for v in vectors]
    expected = sorted(
        ((cosine_distance(query, v), a.id) for a, v in zip(articles, vectors, strict=True))
    )

    found = me.similar(embedding=embedding(query), limit=20)
    assert found.model == MODEL
    assert ids(found) == [i for _, i in expected]
    for result, (distance, _) in zip(found.results, expected, strict=True):
        assert result.distance == pytest.approx(distance, abs=1e-5)
        assert not result.article.content_markdown  # BASIC view

    assert ids(me.similar(embedding=embedding(query))) == [i for _, i in expected][:10]
    assert ids(me.similar(embedding=embedding(query), limit=3)) == [i for _, i in expected][:3]
    bound = (expected[3][0] + expected[4][0]) / 2
    within = me.similar(embedding=embedding(query), limit=20, max_distance=bound)
    assert ids(within) == [i for _, i in expected][:4]

    # By an article: its own embedding is the query, and it is left out of the results.
    by_article = me.similar(article_id=articles[0].id, limit=20)
    others = sorted(
        (cosine_distance(vectors[0], v), a.id)
        for a, v in zip(articles[1:], vectors[1:], strict=True)
    )
    assert ids(by_article) == [i for _, i in others]


def test_hnsw_path_gives_the_same_answer(user, monkeypatch):
    """Forced onto the HNSW index (as for a user with many vectors): same order, small set."""
    rng = random.Random(2)
    me = user()
    query = random_vector(rng)
    vectors = [near(query, 0.3 * (i + 1), rng) for i in range(8)]
    articles = [me.create(v) for v in vectors]
    monkeypatch.setattr(embedding_repository, "EXACT_SCAN_MAX", 0)
    found = me.similar(embedding=embedding(query), limit=5)
    expected = sorted(
        (cosine_distance(query, v), a.id) for a, v in zip(articles, vectors, strict=True)
    )
    assert ids(found) == [i for _, i in expected][:5]


def test_create_echoes_model_and_update_replaces_and_removes(user):
    rng = random.Random(3)
    me = user()
    query = random_vector(rng)
    article = me.create(near(query, 3.0, rng))
    assert article.embedding.model == MODEL and article.embedding.dimensions == DIM
    assert not article.embedding.values  # 6 KB: never sent back
    other = me.create(query)
    fetched = me.articles.GetArticle(pb.GetArticleRequest(id=article.id)).article
    assert not fetched.HasField("embedding")  # reads never load embeddings

    before = me.similar(article_id=other.id).results[0].distance
    replaced = me.articles.UpdateArticle(
        pb.UpdateArticleRequest(
            article=pb.Article(id=article.id, embedding=embedding(near(query, 0.1, rng))),
            update_mask=mask("embedding"),
        )
    ).article
    assert replaced.etag == article.etag  # an embedding alone is no new version
    after = me.similar(article_id=other.id).results[0]
    assert after.article.id == article.id and after.distance < before

    me.articles.UpdateArticle(
        pb.UpdateArticleRequest(article=pb.Article(id=article.id), update_mask=mask("embedding"))
    )
    assert ids(me.similar(article_id=other.id)) == []
    assert status_of(lambda: me.similar(article_id=article.id)) == Code.FAILED_PRECONDITION


def test_set_embeddings_sets_replaces_and_removes(user):
    rng = random.Random(4)
    me = user()
    query = random_vector(rng)
    a, b = me.create(), me.create()
    response = me.set(
        pb.EmbeddingItem(article_id=a.id, embedding=embedding(near(query, 0.1, rng))),
        pb.EmbeddingItem(article_id=b.id, embedding=embedding(near(query, 2.0, rng))),
    )
    assert (response.set_count, response.removed_count) == (2, 0)
    assert ids(me.similar(embedding=embedding(query))) == [a.id, b.id]
    me.set(pb.EmbeddingItem(article_id=b.id, embedding=embedding(query)))  # replace
    assert ids(me.similar(embedding=embedding(query))) == [b.id, a.id]
    response = me.set(pb.EmbeddingItem(article_id=a.id))  # empty: remove
    assert (response.set_count, response.removed_count) == (0, 1)
    assert ids(me.similar(embedding=embedding(query))) == [b.id]


def test_only_the_query_model_is_compared(user):
    rng = random.Random(5)
    me = user()
    query = random_vector(rng)
    mine = me.create(near(query, 0.5, rng))
    other_model = me.create(query, model="another-model")
    found = me.similar(embedding=embedding(query))
    assert ids(found) == [mine.id]
    assert ids(me.similar(embedding=embedding(query, "another-model"))) == [other_model.id]


def test_include_competitors(user):
    rng = random.Random(6)
    me = user()
    query = random_vector(rng)
    own = me.create(near(query, 1.0, rng))
    competitor = me.competitors.CreateCompetitor(
        cpb.CreateCompetitorRequest(competitor=cpb.Competitor(domain=f"{unique('c')}.example"))
    ).competitor
    me.competitors.UpsertCompetitorArticles(
        cpb.UpsertCompetitorArticlesRequest(
            competitor_id=competitor.id,
            articles=[
                cpb.CompetitorArticle(
                    url="https://c.example/near", embedding=embedding(near(query, 0.2, rng))
                ),
                cpb.CompetitorArticle(url="https://c.example/later"),
            ],
        )
    )
    stored = {
        a.url: a
        for a in me.competitors.ListCompetitorArticles(
            cpb.ListCompetitorArticlesRequest(competitor_id=competitor.id)
        ).articles
    }
    far = near(query, 3.0, rng)
    me.set(
        pb.EmbeddingItem(
            competitor_article_id=stored["https://c.example/later"].id, embedding=embedding(far)
        )
    )
    assert ids(me.similar(embedding=embedding(query))) == [own.id]
    found = me.similar(embedding=embedding(query), include_competitors=True)
    assert ids(found) == [
        stored["https://c.example/near"].id,
        own.id,
        stored["https://c.example/later"].id,
    ]
    assert found.results[0].competitor_article.url == "https://c.example/near"
    assert found.results[2].distance == pytest.approx(cosine_distance(query, far), abs=1e-5)


def test_soft_deleted_articles_are_left_out(user):
    rng = random.Random(7)
    me = user()
    query = random_vector(rng)
    a, b = me.create(near(query, 0.1, rng)), me.create(near(query, 1.0, rng))
    me.articles.DeleteArticle(pb.DeleteArticleRequest(id=a.id))
    assert ids(me.similar(embedding=embedding(query))) == [b.id]
    me.articles.UndeleteArticle(pb.UndeleteArticleRequest(id=a.id))
    assert ids(me.similar(embedding=embedding(query))) == [a.id, b.id]


def test_batch_create_with_embeddings(user):
    rng = random.Random(8)
    me = user()
    query = random_vector(rng)
    vectors = [near(query, 0.5, rng), near(query, 0.1, rng)]
    created = me.articles.BatchCreateArticles(
        pb.BatchCreateArticlesRequest(
            articles=[pb.Article(title=unique("t"), embedding=embedding(v)) for v in vectors]
            + [pb.Article(title=unique("t"))]
        )
    ).articles
    assert [a.embedding.dimensions for a in created] == [DIM, DIM, 0]
    assert ids(me.similar(embedding=embedding(query))) == [created[1].id, created[0].id]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ([1.0] * (DIM - 1), "must hold 1536 values"),
        ([1.0] * (DIM - 1) + [math.nan], "finite"),
        ([1.0] * (DIM - 1) + [math.inf], "finite"),
        ([0.0] * DIM, "zero vector"),
    ],
)
def test_bad_vectors_are_invalid_argument_naming_the_field(user, values, complaint):
    me = user()
    article = me.create()
    item = pb.EmbeddingItem(article_id=article.id, embedding=embedding(values))
    good = pb.EmbeddingItem(article_id=me.create().id, embedding=embedding([1.0] * DIM))
    details = details_of(lambda: me.set(good, item))
    assert details.code == Code.INVALID_ARGUMENT
    assert complaint in details.field_violations["items[1].embedding.values"]
    assert ids(me.similar(embedding=embedding([1.0] * DIM))) == []  # nothing written
    details = details_of(lambda: me.similar(embedding=embedding(values)))
    assert complaint in details.field_violations["embedding.values"]
    details = details_of(lambda: me.create(values))
    assert complaint in details.field_violations["article.embedding.values"]


def test_other_bad_requests(user):
    me = user()
    article = me.create([1.0] * DIM)
    vector = embedding([1.0] * DIM)
    cases = {
        "limit": lambda: me.similar(article_id=article.id, limit=101),
        "max_distance": lambda: me.similar(article_id=article.id, max_distance=2.5),
        "embedding": lambda: me.similar(article_id=article.id, embedding=vector),
        "article_id": lambda: me.similar(),
        "embedding.model": lambda: me.similar(embedding=epb.Embedding(values=[1.0] * DIM)),
        "items[1].article_id": lambda: me.set(
            pb.EmbeddingItem(article_id=article.id, embedding=vector),
            pb.EmbeddingItem(article_id=article.id, embedding=vector),
        ),
        "items": lambda: me.set(),
    }
    for field, call in cases.items():
        details = details_of(call)
        assert details.code == Code.INVALID_ARGUMENT, field
        assert field in details.field_violations, (field, details.field_violations)


def test_isolation_between_users(user, admin_articles):
    rng = random.Random(9)
    alice, bob = user(), user()
    query = random_vector(rng)
    secret = alice.create(query)
    bobs = bob.create(near(query, 1.0, rng))
    # Bob finds only his own article, even with Alice's exact vector.
    assert ids(bob.similar(embedding=embedding(query))) == [bobs.id]
    assert status_of(lambda: bob.similar(article_id=secret.id)) == Code.NOT_FOUND
    assert (
        status_of(lambda: bob.similar(embedding=embedding(query), user_id=alice.account.id))
        == Code.NOT_FOUND
    )
    # All or nothing: one foreign item refuses the batch, his own item is not written either.
    own = bob.create()
    foreign = pb.EmbeddingItem(article_id=secret.id, embedding=embedding(near(query, 2, rng)))
    mine = pb.EmbeddingItem(article_id=own.id, embedding=embedding(query))
    assert status_of(lambda: bob.set(mine, foreign)) == Code.NOT_FOUND
    assert ids(bob.similar(embedding=embedding(query))) == [bobs.id]
    assert ids(alice.similar(embedding=embedding(query))) == [secret.id]  # unchanged
    # Admins act for a user: by vector naming the user, or by article (its owner).
    found = admin_articles.FindSimilarArticles(
        pb.FindSimilarArticlesRequest(embedding=embedding(query), user_id=alice.account.id)
    )
    assert ids(found) == [secret.id]
    by_article = admin_articles.FindSimilarArticles(
        pb.FindSimilarArticlesRequest(article_id=bobs.id, include_competitors=True)
    )
    assert ids(by_article) == []  # Bob's only other article has no embedding
    assert (
        status_of(
            lambda: admin_articles.FindSimilarArticles(
                pb.FindSimilarArticlesRequest(article_id=secret.id, user_id=bob.account.id)
            )
        )
        == Code.NOT_FOUND
    )


def test_migration_down_and_up_again(vector_admin_url):
    url = support.create_database(vector_admin_url)
    engine = create_engine(normalize_url(url))
    try:
        migrate.upgrade(url)
        migrate.downgrade(url, "0012")
        with engine.connect() as conn:
            assert embeddings.column_dimensions(conn, embeddings.ARTICLE_TABLE) is None
        # What an operator runs once pgvector is there: the tables come (back).
        assert enable_embeddings_command(argparse.Namespace(), support.make_settings(url)) == 0
        with engine.connect() as conn:
            assert embeddings.column_dimensions(conn, embeddings.ARTICLE_TABLE) == DIM
        migrate.downgrade(url, "0012")
        migrate.upgrade(url)
        with engine.connect() as conn:
            assert embeddings.column_dimensions(conn, embeddings.ARTICLE_TABLE) == DIM
        # Another configured dimension: empty tables are re-typed (`enable-embeddings`).
        with engine.begin() as conn:
            assert "re-typed" in embeddings.ensure_schema(conn, 8)
        with engine.connect() as conn:
            assert embeddings.column_dimensions(conn, embeddings.COMPETITOR_TABLE) == 8
    finally:
        engine.dispose()
        support.drop_database(vector_admin_url, url)


def test_wrong_configured_dimension_is_failed_precondition(database_url, started, new_account):
    app = support.start_app(started, database_url, embedding_dimensions=8)
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(channel)
    metadata = (("authorization", f"Bearer {account.token}"),)
    details = details_of(
        lambda: stub.FindSimilarArticles(
            pb.FindSimilarArticlesRequest(embedding=embedding([1.0] * 8)), metadata=metadata
        )
    )
    channel.close()
    assert details.code == Code.FAILED_PRECONDITION
    assert "vector(1536)" in details.message and "BLOGSTORE_EMBEDDING_DIMENSIONS" in details.message


def test_unknown_article_is_not_found(user):
    me = user()
    assert status_of(lambda: me.similar(article_id=str(uuid.uuid4()))) == Code.NOT_FOUND
    item = pb.EmbeddingItem(
        competitor_article_id=str(uuid.uuid4()), embedding=embedding([1.0] * DIM)
    )
    assert status_of(lambda: me.set(item)) == Code.NOT_FOUND

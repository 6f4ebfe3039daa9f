"""Similarity search at scale: `python -m bench.similarity [--quick]` (BENCHMARKS.md, last section).

On an embedded pgserver (it ships pgvector; or `--admin-url` of a server that has it):
N vectors (default 100,000 of 1,536 dimensions), random but clustered (one of N/100
centers plus noise, so that the nearest neighbours are meaningful), generated inside
PostgreSQL (random_normal) straight into the real schema (migration 0018, row-level
security on). Then the HNSW index is built (timed), and over Q queries (default 200, drawn
like the data):

- exact search (the index disabled: a sequential scan) is the truth for recall@10;
- the HNSW index alone, over all vectors, for several hnsw.ef_search: p50/p95 and recall@10;
- one user owning 1% of the vectors: the HNSW index with the owner as a post-filter
  (what a plain `ORDER BY ... LIMIT` does) against what FindSimilarArticles does;
- FindSimilarArticles through the real server (a subprocess, gRPC, a service principal, 1
  call in flight) for the 1% user (exact path) and for a user owning 50% (HNSW path).

`--quick`: 2,000 vectors of 64 dimensions and 20 queries, to check that it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

BIG_SHARE = 0.5  # the user owning half the vectors (HNSW path)
SMALL_USERS = 50  # the rest is split between these: 1% each
MODEL = "bench-model"
NOISE = 0.35  # per dimension, around centers of N(0, 1) per dimension


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.similarity", description=__doc__)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-search", default="40,100,200", help="comma-separated")
    parser.add_argument("--admin-url", help="a PostgreSQL with pgvector (default: pgserver)")
    parser.add_argument("--quick", action="store_true", help="2,000 x 64, 20 queries")
    parser.add_argument("--output", type=Path, help="JSON path (default: print only)")
    parser.add_argument(
        "--keep", type=float, default=0, help="seconds to keep the database (prints its URL)"
    )
    parser.add_argument("--vacuum", action="store_true", help="VACUUM after loading")
    args = parser.parse_args(argv)
    if args.quick:
        args.vectors, args.dims, args.queries = 2_000, 64, 20
    report = run(
        vectors=args.vectors, dims=args.dims, queries=args.queries, k=args.k,
        ef_searches=[int(x) for x in args.ef_search.split(",")], admin_url=args.admin_url,
        keep=args.keep, vacuum=args.vacuum,
    )  # fmt: skip
    text_report = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text_report)
    print(text_report)
    return 0


@contextlib.contextmanager
def vector_server(admin_url: str | None) -> Iterator[str]:
    if admin_url:
        yield admin_url
        return
    import pgserver

    data_dir = Path(tempfile.mkdtemp(prefix="blogstore-bench-pgvector-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")  # pyright: ignore[reportPrivateImportUsage]
    yield server.get_uri("postgres")


def run(
    *, vectors: int, dims: int, queries: int, k: int, ef_searches: list[int],
    admin_url: str | None, keep: float = 0, vacuum: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from storage import embeddings, migrate
    from storage.engine import normalize_url

    os.environ["BLOGSTORE_EMBEDDING_DIMENSIONS"] = str(dims)  # migration 0018's column type
    report: dict[str, Any] = {
        "vectors": vectors, "dims": dims, "queries": queries, "k": k,
        "m": embeddings.HNSW_M, "ef_construction": embeddings.HNSW_EF_CONSTRUCTION,
    }  # fmt: skip
    with vector_server(admin_url) as admin:
        name = f"bench_similarity_{uuid.uuid4().hex[:8]}"
        admin_engine = create_engine(normalize_url(admin), isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = normalize_url(admin).set(database=name).render_as_string(hide_password=False)
        try:
            migrate.upgrade(url)
            engine = create_engine(normalize_url(url))
            with engine.connect() as conn:
                report["pgvector"] = conn.scalar(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
                report["postgres"] = conn.scalar(text("SHOW server_version"))
                owners = _load(conn, vectors, dims, report)
                if vacuum:  # what autovacuum does soon after a bulk load
                    conn.commit()
                    raw: Any = conn.connection.dbapi_connection
                    raw.autocommit = True
                    conn.execute(text("VACUUM ANALYZE article_embeddings"))
                    conn.execute(text("VACUUM ANALYZE articles"))
                    raw.autocommit = False
                _build_index(conn, report)
                qs = _queries(conn, queries, dims, vectors)
                _measure_sql(conn, qs, k, ef_searches, owners, report)
            engine.dispose()
            _measure_rpc(url, qs, k, owners, dims, report)
            if keep:
                print(f"kept for {keep} s: {url}", file=sys.stderr, flush=True)
                time.sleep(keep)
        finally:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin_engine.dispose()
    return report


def _load(conn: Any, vectors: int, dims: int, report: dict[str, Any]) -> dict[str, Any]:
    """Users, articles and their embeddings, all generated by PostgreSQL; returns the owners."""
    started = time.perf_counter()
    centers = max(1, vectors // 100)
    big = int(vectors * BIG_SHARE)
    small = (vectors - big) // SMALL_USERS
    conn.execute(text("SET maintenance_work_mem = '2GB'"))
    conn.execute(text("DROP INDEX ix_article_embeddings_embedding_hnsw"))
    conn.execute(
        text(
            "INSERT INTO users (email, username, password_hash) "
            "SELECT 'bench' || i || '@example.com', 'bench' || i, 'x' "
            "FROM generate_series(0, :n) i"
        ),
        {"n": SMALL_USERS},
    )
    users = list(conn.scalars(text("SELECT id FROM users ORDER BY username")))
    big_user, small_users = users[0], users[1:]
    # Article i belongs to the big user below `big`, else to small user (i - big) // small.
    conn.execute(
        text(
            "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
            "word_count, reading_time_minutes, internal_links, external_links, content_hash) "
            "SELECT CASE WHEN i < :big THEN CAST(:big_user AS uuid) "
            "ELSE (CAST(:small_users AS uuid[]))[1 + least((i - :big) / :small, :last)] END, "
            "'a' || i, 'a-' || i, '', '', 0, 0, 0, 0, md5(i::text) "
            "FROM generate_series(0, :n - 1) i"
        ),
        {"big": big, "big_user": big_user, "small_users": small_users, "small": max(small, 1),
         "last": SMALL_USERS - 1, "n": vectors},
    )  # fmt: skip
    conn.execute(
        text(
            "CREATE TEMP TABLE centers AS SELECT c, ARRAY(SELECT random_normal(0, 1) "
            "FROM generate_series(1, :dims) WHERE c IS NOT NULL)::real[] AS v "
            "FROM generate_series(0, :centers - 1) c"
        ),
        {"dims": dims, "centers": centers},
    )
    conn.execute(
        text(
            "INSERT INTO article_embeddings (article_id, user_id, model, embedding) "
            "SELECT a.id, a.user_id, :model, ARRAY(SELECT v[g] + random_normal(0, :noise) "
            "FROM generate_series(1, :dims) g)::vector "
            "FROM articles a JOIN centers ON c = (hashtext(a.id::text) & 2147483647) % :centers"
        ),
        {"model": MODEL, "noise": NOISE, "dims": dims, "centers": centers},
    )
    conn.commit()
    report["load_seconds"] = round(time.perf_counter() - started, 1)
    return {"big": big_user, "small": small_users[0], "centers": centers}


def _build_index(conn: Any, report: dict[str, Any]) -> None:
    from storage import embeddings

    conn.execute(text("SET maintenance_work_mem = '2GB'"))
    started = time.perf_counter()
    conn.execute(
        text(
            "CREATE INDEX ix_article_embeddings_embedding_hnsw ON article_embeddings "
            f"USING hnsw (embedding vector_cosine_ops) WITH (m = {embeddings.HNSW_M}, "
            f"ef_construction = {embeddings.HNSW_EF_CONSTRUCTION})"
        )
    )
    conn.commit()
    report["index_build_seconds"] = round(time.perf_counter() - started, 1)
    report["index_mb"] = conn.scalar(
        text("SELECT pg_relation_size('ix_article_embeddings_embedding_hnsw') / 1048576")
    )
    report["table_mb"] = conn.scalar(
        text("SELECT pg_total_relation_size('article_embeddings') / 1048576")
    )
    conn.execute(text("ANALYZE article_embeddings"))
    conn.commit()


def _queries(conn: Any, count: int, dims: int, vectors: int) -> list[list[float]]:
    """Query vectors drawn like the data: a random center plus noise."""
    rows = conn.scalars(
        text(
            "SELECT ARRAY(SELECT v[g] + random_normal(0, :noise) "
            "FROM generate_series(1, :dims) g WHERE q IS NOT NULL)::real[] "
            "FROM generate_series(1, :count) q "
            "JOIN centers ON c = (q * 7919) % (SELECT count(*) FROM centers)"
        ),
        {"noise": NOISE, "dims": dims, "count": count},
    )
    return [list(r) for r in rows]


def _vector(q: list[float]) -> str:
    return "[" + ",".join(format(x, ".9g") for x in q) + "]"


def _timed(fn: Callable[[], list]) -> tuple[float, list]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def _summary(latencies: list[float], recalls: list[float] | None = None) -> dict[str, float]:
    ordered = sorted(latencies)
    out = {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 2),
    }
    if recalls is not None:
        out["recall_at_k"] = round(statistics.fmean(recalls), 4)
    return out


def _knn(conn: Any, q: list[float], k: int, *, owner: Any = None, exact: bool = False,
         ef_search: int | None = None) -> list:  # fmt: skip
    """Ids of the k nearest, in one transaction with its own settings."""
    conn.execute(text("BEGIN"))
    try:
        if exact:
            conn.execute(text("SET LOCAL enable_indexscan = off"))
            conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        if ef_search:
            conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
        where = "WHERE user_id = :owner" if owner is not None else ""
        return list(
            conn.scalars(
                text(
                    f"SELECT article_id FROM article_embeddings {where} "
                    "ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k"
                ),
                {"q": _vector(q), "k": k, "owner": owner},
            )
        )
    finally:
        conn.execute(text("COMMIT"))


def _recall(found: list, truth: list) -> float:
    return len(set(found) & set(truth)) / max(1, len(truth))


def _measure_sql(
    conn: Any, qs: list[list[float]], k: int, ef_searches: list[int], owners: dict,
    report: dict[str, Any],
) -> None:  # fmt: skip
    conn.commit()
    raw = conn.connection.dbapi_connection
    raw.autocommit = True
    exact = [_timed(lambda q=q: _knn(conn, q, k, exact=True)) for q in qs]
    truth = [ids for _, ids in exact]
    report["exact_all"] = _summary([t for t, _ in exact])
    report["hnsw_all"] = {}
    for ef in ef_searches:
        runs = [_timed(lambda q=q, ef=ef: _knn(conn, q, k, ef_search=ef)) for q in qs]
        report["hnsw_all"][ef] = _summary(
            [t for t, _ in runs], [_recall(ids, t) for (_, ids), t in zip(runs, truth, strict=True)]
        )
    owner = owners["small"]
    exact_small = [_timed(lambda q=q: _knn(conn, q, k, owner=owner, exact=True)) for q in qs]
    truth_small = [ids for _, ids in exact_small]
    report["small_user_truth"] = truth_small
    report["exact_small_user"] = _summary([t for t, _ in exact_small])
    report["hnsw_small_user_post_filter"] = {}
    for ef in (40, 1000):
        runs = [_timed(lambda q=q, ef=ef: _knn(conn, q, k, owner=owner, ef_search=ef)) for q in qs]
        report["hnsw_small_user_post_filter"][ef] = _summary(
            [t for t, _ in runs],
            [_recall(ids, t) for (_, ids), t in zip(runs, truth_small, strict=True)],
        )
    big = owners["big"]
    report["big_user_truth"] = [_knn(conn, q, k, owner=big, exact=True) for q in qs]
    raw.autocommit = False


def _measure_rpc(
    url: str, qs: list[list[float]], k: int, owners: dict, dims: int, report: dict[str, Any]
) -> None:
    from blogstore import client
    from blogstore.v1 import articles_pb2, articles_pb2_grpc, embeddings_pb2

    from bench.servers import start_server

    port = int(os.environ.get("BLOGSTORE_BENCH_PORT", "0")) or None
    server = start_server(
        url, metrics=False, port=port, extra_env={"BLOGSTORE_EMBEDDING_DIMENSIONS": str(dims)}
    )
    try:
        channel = client.connect(server.target, server.key, default_timeout=30)
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        for name, owner, truth in (
            ("rpc_small_user", owners["small"], report.pop("small_user_truth")),
            ("rpc_big_user", owners["big"], report.pop("big_user_truth")),
        ):

            def call(q: list[float], owner: Any = owner) -> list:
                response = stub.FindSimilarArticles(
                    articles_pb2.FindSimilarArticlesRequest(
                        embedding=embeddings_pb2.Embedding(model=MODEL, values=q),
                        user_id=str(owner), limit=k,
                    )
                )  # fmt: skip
                return [uuid.UUID(r.article.id) for r in response.results]

            for q in qs[:5]:  # warm-up: connections, prepared plans
                call(q)
            runs = [_timed(lambda q=q: call(q)) for q in qs]
            report[name] = _summary(
                [t for t, _ in runs],
                [_recall(ids, t) for (_, ids), t in zip(runs, truth, strict=True)],
            )
        channel.close()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

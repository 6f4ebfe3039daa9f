"""BatchCreateArticles' limit: PostgreSQL's own cost for the same rows (issue 17).

The same 1,000 articles a BatchCreateArticles call sends (the Batch client's templates, titles
made unique per call, owners drawn from the same users), with what the server derives
(storage.content.derive) and the provenance columns it writes, go in by ONE `COPY` per call
into a copy of `articles` in the schema `bench_copy_limit`: `LIKE articles INCLUDING ALL`
(generated search_vector and rank_vector, every index, constraints, defaults) plus the
foreign keys and the tag-count triggers of migration 0017, which stage into that schema's own
copies of article_tag_count_changes / article_tag_counts (the trigger functions name their
tables unqualified; the limit's connections put the schema first on their search_path), so
the real counts are untouched. One COPY in autocommit = one durable transaction, the commit
(and the deferred tag-count apply) included, like the server's one transaction per batch.
Rows are made on the client before each COPY is sent; only PostgreSQL's work is the limit.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

import psycopg2

from bench.bulk import _text

SCHEMA = "bench_copy_limit"
COLUMNS = (
    "id", "user_id", "title", "slug", "content_markdown", "content_html", "excerpt",
    "meta_title", "meta_description", "primary_keyword", "secondary_keywords", "tags",
    "seo_score", "wp_url", "wp_status", "status", "word_count", "reading_time_minutes",
    "internal_links", "external_links", "content_hash", "made_by_kind", "made_by_id",
    "made_by_name", "made_request_id", "made_pipeline_stage",
)  # fmt: skip
_TEMPLATE_COLUMNS = COLUMNS[4:]  # per template; id, owner, title and slug vary per row
_TRIGGERS = (
    f"CREATE TRIGGER stage_tag_counts AFTER INSERT ON {SCHEMA}.articles "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION public.blogstore_stage_tag_counts()",
    f"CREATE CONSTRAINT TRIGGER apply_tag_counts AFTER INSERT ON "
    f"{SCHEMA}.article_tag_count_changes DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "WHEN (NEW.delta = 0) EXECUTE FUNCTION public.blogstore_apply_tag_count_changes()",
)


def create(url: str) -> None:
    """(Re)create the limit's schema: empty copies of the tables, their keys and triggers."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        for table in ("articles", "article_tag_counts", "article_tag_count_changes"):
            cur.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
        for table, column, target in (
            ("articles", "user_id", "users"),
            ("articles", "pipeline_id", "pipelines"),
            ("article_tag_counts", "user_id", "users"),
        ):
            cur.execute(
                f"ALTER TABLE {SCHEMA}.{table} ADD FOREIGN KEY ({column}) "
                f"REFERENCES public.{target} (id) ON DELETE CASCADE"
            )
        for statement in _TRIGGERS:
            cur.execute(statement)
    conn.close()


def drop(url: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    conn.close()


def connect(url: str) -> Any:
    """An autocommit connection whose unqualified table names resolve to the limit's schema."""
    db = psycopg2.connect(url, application_name="bench-copylimit")
    db.autocommit = True
    with db.cursor() as cur:
        cur.execute(f"SET search_path = {SCHEMA}, public")
    return db


class Rows:
    """COPY text for batches of the Batch client's articles, as the server would store them."""

    def __init__(self, params: dict, worker: int, size: int) -> None:
        from blogstore.v1 import articles_pb2

        from storage.content import derive, slug_from_title

        self.size = size
        self.users = [str(u) for u in params["user_ids"]]
        self.rng = random.Random(f"copy-{worker}-{uuid.uuid4()}")
        self.tag = f"{uuid.uuid4().hex[:6]}{worker}"
        self.counter = itertools.count(1)
        self.templates: list[tuple[str, str, str]] = []
        for blob in params["templates"]:
            a = articles_pb2.Article.FromString(blob)
            d = derive(a.content_markdown)
            values = {
                "content_markdown": a.content_markdown, "content_html": d.content_html,
                "excerpt": a.excerpt, "meta_title": a.meta_title,
                "meta_description": a.meta_description, "primary_keyword": a.primary_keyword,
                "secondary_keywords": list(a.secondary_keywords), "tags": list(a.tags),
                "seo_score": a.seo_score, "wp_url": "", "wp_status": "", "status": "draft",
                "word_count": d.word_count, "reading_time_minutes": d.reading_time_minutes,
                "internal_links": d.internal_links, "external_links": d.external_links,
                "content_hash": d.content_hash, "made_by_kind": "service", "made_by_id": None,
                "made_by_name": "bench", "made_request_id": str(uuid.uuid4()),
                "made_pipeline_stage": "",
            }  # fmt: skip
            rest = "\t".join(_text(values[c]) for c in _TEMPLATE_COLUMNS)
            self.templates.append((a.title[:50], slug_from_title(a.title[:50]), rest))

    def batch(self) -> str:
        lines = []
        for _ in range(self.size):
            title, slug, rest = self.rng.choice(self.templates)
            n = next(self.counter)
            suffix = f"{self.tag}x{n}"
            lines.append(
                f"{uuid.uuid4()}\t{self.rng.choice(self.users)}\t{_text(f'{title} {suffix}')}"
                f"\t{slug}-{suffix}\t{rest}\n"
            )
        return "".join(lines)


def copy_batch(cur: Any, text: str) -> None:
    """One COPY of a batch (autocommit: one transaction, committed)."""
    import io

    cur.copy_expert(f"COPY articles ({', '.join(COLUMNS)}) FROM STDIN", io.StringIO(text))

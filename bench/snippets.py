"""Snippet cost per Search page: the page statement before (ts_headline over the raw markdown)
and after (over the text of content_html), on bench-corpus articles and on 2 MiB ones.

    uv run python -m bench.snippets --database-url postgresql://.../bench_snippets

Creates (or reuses) the database, loads 2,000 corpus articles (~9 KB of markdown) and 20 of
~2 MiB, then times the page of 20 (BASIC view, the server's SQL as bench/dblimit.py writes
it) for three cases: a common word in the typical articles, a common word in the 2 MiB ones,
and a word only in the 2 MiB ones' titles (the snippet's term lookup finds nothing).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import psycopg2

from bench.bulk import copy_rows
from bench.corpus import Corpus
from bench.dataset import create_database, insert_users
from bench.dblimit import BASIC, SEARCH_PAGE, Q
from storage.content import derive
from storage.lifecycle.pgtools import one_row

# The page statement before this change (main at 20135b5), for the comparison.
OLD_PAGE = f"""
SELECT {BASIC}, ts_headline(CAST('english' AS REGCONFIG),
  replace(replace(replace(articles.excerpt || ' ' || substr(articles.content_markdown,
    greatest(1, strpos(lower(articles.content_markdown), %(term)s) - 300), 1500),
    '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
  {Q}, 'MaxFragments=2, MinWords=8, MaxWords=24, StartSel=<b>, StopSel=</b>') AS snippet
FROM articles WHERE articles.id = ANY(%(ids)s::uuid[])
"""
COLUMNS = (
    "id", "user_id", "title", "slug", "content_markdown", "content_html", "excerpt",
    "word_count", "reading_time_minutes", "internal_links", "external_links", "content_hash",
    "tags",
)  # fmt: skip


def load(url: str) -> None:
    create_database(url, replace=True)
    rng, corpus = random.Random(5), Corpus()
    conn = psycopg2.connect(url)
    typical, huge = insert_users(conn, 2)
    rows = []
    for i in range(2000):
        a = corpus.article(rng)
        rows.append(_row(typical, f"typical-{i}", a["title"], a["content_markdown"], a))
    for i in range(20):
        a = corpus.article(rng)
        markdown = a["content_markdown"]
        while len(markdown) < 2 * 1024 * 1024 - 20_000:
            markdown += "\n\n" + corpus.markdown(rng, "More", 2000)
        rows.append(_row(huge, f"huge-{i}", f"Zorblax volume {i}", markdown, a))
    with conn.cursor() as cur:
        for start in range(0, len(rows), 200):
            copy_rows(cur, "articles", COLUMNS, rows[start : start + 200])
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE articles")
    conn.close()


def _row(user: uuid.UUID, slug: str, title: str, markdown: str, a: dict) -> tuple:
    d = derive(markdown)
    return (
        uuid.uuid4(), user, title, slug, markdown, d.content_html, a["excerpt"], d.word_count,
        d.reading_time_minutes, d.internal_links, d.external_links, d.content_hash, a["tags"],
    )  # fmt: skip


def measure(url: str, repeats: int) -> None:
    corpus = Corpus()
    common = corpus.words[0]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cases = []
        for name, slug_like, query, term in (
            ("typical articles (~9 KB), common word", "typical-%", common, common),
            ("2 MiB articles, common word", "huge-%", common, common),
            ("2 MiB articles, title-only word", "huge-%", "zorblax", ""),
        ):
            cur.execute(
                "SELECT id::text FROM articles WHERE slug LIKE %s ORDER BY slug LIMIT 20",
                (slug_like,),
            )
            ids = [r[0] for r in cur.fetchall()]
            cases.append((name, {"q": query, "ids": ids, "term": term}))
        for name, args in cases:
            for label, sql in (("before (markdown)", OLD_PAGE), ("after (html text)", SEARCH_PAGE)):
                cur.execute(sql, args)  # warm the cache
                times = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    cur.execute(sql, args)
                    cur.fetchall()
                    times.append((time.perf_counter() - began) * 1000)
                times.sort()
                p95 = times[max(0, round(len(times) * 0.95) - 1)]
                print(
                    f"{name:42} {label:18} page of {len(args['ids'])}: "
                    f"median {statistics.median(times):6.1f} ms, p95 {p95:6.1f} ms"
                )
            cur.execute(SEARCH_PAGE, args)
            print("   e.g.", one_row(cur)[-1][:160])


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.snippets")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not args.skip_load:
        load(args.database_url)
    measure(args.database_url, args.repeats)


if __name__ == "__main__":
    main()

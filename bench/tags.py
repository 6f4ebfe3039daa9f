"""ListTags at scale: a lean dataset of N articles (the bench corpus' users, ownership skew,
titles and Zipf-drawn tags, with a mixed-case spelling now and then; one-line content), and
timings of ListTags' statements and of migration 0017's backfill.

    uv run python -m bench.tags load --articles 1000000 --database-url .../bench_tags_1m
    uv run python -m bench.tags measure --database-url .../bench_tags_1m

`load` migrates to 0012 (before the tag counts), COPYs users and articles, then runs
`blogstore migrate` to head, timing 0017 (its backfill reads every live article once).
`measure` EXPLAIN ANALYZEs ListTags' statement for the users with the most tags, in both
orders, against the recount from articles that the counts replace.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid

import psycopg2

from bench.bulk import copy_rows
from bench.corpus import Corpus
from bench.dataset import create_database, insert_users, plan_articles
from storage.lifecycle.pgtools import one_row

CHUNK = 20_000


def load(url: str, articles: int) -> None:
    create_database(url, replace=True)  # migrated to head: step back to before 0017
    _migrate(url, "downgrade", "0012")
    rng, corpus = random.Random(11), Corpus()
    conn = psycopg2.connect(url)
    users = insert_users(conn, max(1, articles // 100))
    owners = plan_articles(users, articles, rng).owners
    columns = (
        "id", "user_id", "title", "slug", "content_markdown", "content_html", "word_count",
        "reading_time_minutes", "internal_links", "external_links", "content_hash", "tags",
        "delete_time",
    )  # fmt: skip
    started = time.monotonic()
    with conn.cursor() as cur:
        for start in range(0, articles, CHUNK):
            rows = []
            for i in range(start, min(articles, start + CHUNK)):
                tags = corpus.article(rng)["tags"] if i % 8 == 0 else _tags(corpus, rng)
                if rng.random() < 0.05:
                    tags = [t.upper() for t in tags]
                deleted = "2026-01-01T00:00:00Z" if rng.random() < 0.02 else None
                rows.append((
                    uuid.uuid4(), owners[i], f"Article {i}", f"article-{i}", "Body.",
                    "<p>Body.</p>", 1, 1, 0, 0, "x", tags, deleted,
                ))  # fmt: skip
            copy_rows(cur, "articles", columns, rows)
            conn.commit()
            print(f"{start + len(rows)} articles, {time.monotonic() - started:.0f} s", flush=True)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE articles")
    conn.close()
    began = time.monotonic()
    _migrate(url, "migrate")
    print(f"migration 0017 (backfill of {articles} articles): {time.monotonic() - began:.1f} s")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE article_tag_counts")
    conn.close()


def _tags(corpus: Corpus, rng: random.Random) -> list[str]:
    """2-5 tags drawn like corpus.article's, without building a whole article."""
    return sorted(set(rng.choices(corpus._tag_table, k=rng.randint(2, 5))))


def _migrate(url: str, *args: str) -> None:
    """`blogstore migrate` (to head), or ("downgrade", revision)."""
    if args[0] == "downgrade":
        command = [sys.executable, "-c", _DOWNGRADE, url, args[1]]
    else:
        command = [sys.executable, "-m", "server", "migrate"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOGSTORE_", "DATABASE_"))}
    subprocess.run(command, env={**env, "DATABASE_URL": url}, check=True)  # noqa: S603


_DOWNGRADE = "import sys; from storage import migrate; migrate.downgrade(sys.argv[1], sys.argv[2])"

LIST_BY_COUNT = (
    "SELECT tag, tag_key, article_count FROM article_tag_counts WHERE user_id = %(u)s "
    "ORDER BY article_count DESC, tag_key LIMIT 51"
)
LIST_BY_NAME = (
    "SELECT tag, tag_key, article_count FROM article_tag_counts WHERE user_id = %(u)s "
    "AND tag_key >= %(lo)s AND tag_key < %(hi)s ORDER BY tag_key LIMIT 51"
)
RECOUNT = (
    "SELECT lower(t), count(DISTINCT a.id) FROM articles a, unnest(a.tags) t "
    "WHERE a.user_id = %(u)s AND a.delete_time IS NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 51"
)


def measure(url: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM articles")
        print("articles:", one_row(cur)[0])
        cur.execute("SELECT count(*), count(DISTINCT user_id) FROM article_tag_counts")
        print("tag count rows, users:", cur.fetchone())
        cur.execute(
            "SELECT user_id, count(*) FROM article_tag_counts GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        )
        for user_id, tags in cur.fetchall():
            args = {"u": user_id, "lo": "b", "hi": "c"}
            for name, sql in (("count desc", LIST_BY_COUNT), ("name, prefix b", LIST_BY_NAME),
                              ("recount from articles", RECOUNT)):  # fmt: skip
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, args)
                plan = [r[0] for r in cur.fetchall()]
                timing = [line for line in plan if "Execution Time" in line][0]
                print(f"user {user_id} ({tags} tags) {name}: {timing.strip()}")
                if tags and name != "recount from articles":
                    print("   ", plan[0].strip(), "|", plan[1].strip())


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.tags")
    parser.add_argument("command", choices=("load", "measure"))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--articles", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.command == "load":
        load(args.database_url, args.articles)
    measure(args.database_url)


if __name__ == "__main__":
    main()

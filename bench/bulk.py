"""The bulk path for big datasets (1M articles): COPY rows straight into `articles`.

One spawned process generates the rows (markdown from the corpus, derived fields from
`storage.content.derive`, exactly what the server would store) while this one COPYs the
previous chunk, so generation and PostgreSQL overlap on the two cores. PostgreSQL computes
the generated `search_vector` itself; that and the GIN index cost ~4 ms of its CPU per article
on the reference machine, which bounds the rate (~200-250 articles/s there: ~1 h for 1M).
Rows are committed per chunk, and create times are spread over two years, oldest first.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import multiprocessing
import random
import time
import uuid
from collections import deque
from typing import Any

CHUNK = 1000
SITE = "https://blog.example.com"
ARTICLE_COLUMNS = (
    "id", "user_id", "pipeline_id", "title", "slug", "content_markdown", "content_html",
    "excerpt", "meta_title", "meta_description", "primary_keyword", "secondary_keywords", "tags",
    "seo_score", "wp_post_id", "wp_url", "wp_status", "status", "word_count",
    "reading_time_minutes", "internal_links", "external_links", "content_hash", "publish_time",
    "create_time", "update_time",
)  # fmt: skip
_corpus: Any = None


def copy_rows(cur: Any, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(_text(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)


def _text(value: Any) -> str:
    """A value in COPY text format (lists as text[] literals, dicts as JSON)."""
    if value is None:
        return "\\N"
    if isinstance(value, list):
        quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        value = "{" + ",".join(quoted) + "}"
    elif isinstance(value, dict):
        value = json.dumps(value)
    elif isinstance(value, dt.datetime):
        value = value.isoformat()
    value = str(value)
    for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(raw, escaped)
    return value


def _init(seed: int) -> None:
    global _corpus
    from bench.corpus import Corpus

    _corpus = Corpus(seed)


def _rows(task: tuple) -> list[tuple]:
    """Rows first..first+len(owners)-1; deterministic for a seed and chunk."""
    from storage.content import derive, slug_from_title

    seed, first, count, owners, pipelines, now = task
    rng = random.Random(f"{seed}-{first}")
    rows = []
    for offset, (owner, pipeline) in enumerate(zip(owners, pipelines, strict=True)):
        i = first + offset
        v = _corpus.article(rng)
        published = v["status"] == "published"
        wp_url = f"{SITE}/{i}" if published else ""
        d = derive(v["content_markdown"], "", wp_url)
        created = now - dt.timedelta(seconds=(count - i) * 63_072_000 / count)
        rows.append((
            uuid.uuid4(), owner, pipeline, v["title"], f"{slug_from_title(v['title'])}-{i}",
            v["content_markdown"], d.content_html, v["excerpt"], v["meta_title"],
            v["meta_description"], v["primary_keyword"], v["secondary_keywords"], v["tags"],
            v["seo_score"], i if published else None, wp_url, "publish" if published else "",
            v["status"], d.word_count, d.reading_time_minutes, d.internal_links,
            d.external_links, d.content_hash, created + dt.timedelta(hours=2) if published
            else None, created, created,
        ))  # fmt: skip
    return rows


def load_articles_bulk(conn: Any, plan: Any, seed: int) -> dict:
    count = len(plan.owners)
    now = dt.datetime.now(dt.UTC)
    tasks = (
        (seed, first, count, plan.owners[first : first + CHUNK],
         plan.pipelines[first : first + CHUNK], now)
        for first in range(0, count, CHUNK)
    )  # fmt: skip
    copy_seconds, started = 0.0, time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, initializer=_init, initargs=(seed,)) as pool, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        pending: deque = deque()
        done = 0
        for task in [*tasks, None]:
            if task is not None:
                pending.append(pool.apply_async(_rows, (task,)))
            # At most two chunks ahead: generation is faster than COPY and must not pile up.
            while pending and (len(pending) > 2 or task is None):
                rows = pending.popleft().get()
                t0 = time.perf_counter()
                copy_rows(cur, "articles", ARTICLE_COLUMNS, rows)
                conn.commit()
                copy_seconds += time.perf_counter() - t0
                done += len(rows)
                if done % 50_000 < CHUNK:
                    rate = done / (time.perf_counter() - started)
                    print(f"[bench] {done} articles, {rate:.0f}/s", flush=True)
    wall = time.perf_counter() - started
    return {
        "path": "COPY",
        "articles": count,
        "copy_seconds": round(copy_seconds, 2),
        "wall_seconds": round(wall, 2),
        "articles_per_s": round(count / wall, 1),
    }

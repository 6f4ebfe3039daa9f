"""The bulk path for big datasets (1M articles): COPY rows straight into `articles`.

`streams` spawned processes (2 by default) each generate a chunk (markdown from the corpus,
derived fields from `storage.content.derive`, exactly what the server would store) and COPY
it on their own connection, niced, so generation and PostgreSQL's own work (the generated
`search_vector`, ~4 ms of CPU per article) overlap on both cores. The GIN indexes are built
once at the end. 872k articles loaded at 360/s this way (issue 17) against 183/s in one
stream with the indexes kept up row by row. Rows are committed per chunk; create times are
spread over two years and chunks go newest first (see load_articles_bulk).
"""

from __future__ import annotations

import contextlib
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
_conn: Any = None
NICE = 10  # the load shares the machine: its processes and backends yield to others


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


def _stream_init(seed: int, url: str) -> None:
    """A stream: its own corpus and connection; the process and its backend run niced."""
    global _conn
    import os

    import psycopg2

    _init(seed)
    os.nice(max(0, NICE - os.nice(0)))  # NICE in all, whatever the parent's
    _conn = psycopg2.connect(url)
    with _conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    _conn.commit()
    with contextlib.suppress(OSError):  # PostgreSQL on another host or user: not ours to renice
        os.setpriority(os.PRIO_PROCESS, pid, NICE)


def _stream_chunk(task: tuple) -> int:
    rows = _rows(task)
    with _conn.cursor() as cur:
        copy_rows(cur, "articles", ARTICLE_COLUMNS, rows)
    _conn.commit()
    return len(rows)


def _deferred_indexes(cur: Any) -> list[tuple[str, str]]:
    """The GIN indexes of `articles` (name, definition): built once at the end, not per row."""
    cur.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "WHERE i.indrelid = 'articles'::regclass AND am.amname = 'gin'"
    )
    return list(cur.fetchall())


def load_articles_bulk(
    conn: Any, plan: Any, seed: int, *, url: str, streams: int = 2, time_limit: float = 0
) -> dict:
    """`streams` processes each generate a chunk and COPY it on their own connection.

    Chunks go newest first: a load stopped by `time_limit` (seconds) holds the newest
    articles at the density of the full plan, so the newest N look as they would at full
    size (only the oldest are missing). Every chunk's rows are fixed by the seed and its
    position, whatever the order or the stream. The GIN indexes are dropped first and built
    at the end with a large `maintenance_work_mem` (faster than growing them row by row).
    """
    count = len(plan.owners)
    now = dt.datetime.now(dt.UTC)
    tasks = [
        (seed, first, count, plan.owners[first : first + CHUNK],
         plan.pipelines[first : first + CHUNK], now)
        for first in reversed(range(0, count, CHUNK))
    ]  # fmt: skip
    started = time.perf_counter()
    with conn.cursor() as cur:
        deferred = _deferred_indexes(cur)
        for name, _ in deferred:
            cur.execute(f'DROP INDEX "{name}"')
    conn.commit()
    context = multiprocessing.get_context("spawn")
    done = 0
    with context.Pool(streams, initializer=_stream_init, initargs=(seed, url)) as pool:
        pending: deque = deque()
        queue = deque(tasks)
        while queue or pending:
            expired = time_limit and time.perf_counter() - started > time_limit
            while queue and len(pending) < streams * 2 and not expired:
                pending.append(pool.apply_async(_stream_chunk, (queue.popleft(),)))
            if expired:
                queue.clear()
            done += pending.popleft().get()
            if done % 25_000 < CHUNK:
                rate = done / (time.perf_counter() - started)
                print(f"[bench] {done} articles, {rate:.0f}/s", flush=True)
    copied = time.perf_counter() - started
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        for _, definition in deferred:
            cur.execute(definition)
    conn.autocommit = False
    wall = time.perf_counter() - started
    return {
        "path": f"COPY, {streams} streams",
        "articles": done,
        "planned": count,
        "copy_seconds": round(copied, 2),
        "index_seconds": round(wall - copied, 2),
        "wall_seconds": round(wall, 2),
        "articles_per_s": round(done / wall, 1),
    }

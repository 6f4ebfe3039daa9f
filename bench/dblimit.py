"""The database limit: the SQL blogstore runs for List and Search, issued through psycopg2
(and, for BatchCreateArticles, the batch's rows by one COPY: bench/copylimit.py).

The statements are written by hand from storage/repositories/article_reads.py (checked
against the statement log of a scratch run with `log_statement = all`). The server runs them
as prepared statements in autocommit, each prefixed by `set_config(...)` calls in the same
string; the limit sends them as plain statements, one autocommit connection per thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import psycopg2.extras

from bench import copylimit
from bench.jobs import Job, Recorder, cpu_seconds
from bench.scenarios import BATCH_SIZE, LIST_PAGE_SIZE, SEARCH_PAGE_SIZE
from storage.repositories.article_reads import (
    MAY_BE_BOUNDED,
    PHRASE_OPERATOR,
    PHRASE_SCOPE,
    PHRASE_WINDOW,
    SEARCH_CANDIDATES,
    snippet_term,
)

psycopg2.extras.register_uuid()

# ArticleView BASIC: every column but content_markdown and content_html (and search_vector).
BASIC = (
    "articles.id, articles.user_id, articles.pipeline_id, articles.title, articles.slug, "
    "articles.excerpt, articles.meta_title, articles.meta_description, articles.primary_keyword, "
    "articles.secondary_keywords, articles.tags, articles.seo_score, articles.wp_post_id, "
    "articles.wp_url, articles.wp_status, articles.status, articles.word_count, "
    "articles.reading_time_minutes, articles.internal_links, articles.external_links, "
    "articles.content_hash, articles.publish_time, articles.create_time, articles.update_time, "
    "articles.delete_time, articles.version, articles.create_request_id"
)
# GetArticle's statement, for the SQL no-op server (bench/noop.py --database-url).
GET_ARTICLE_SQL = (
    f"SELECT {BASIC}, articles.content_markdown, articles.content_html FROM articles "
    "WHERE articles.id = %s"
)
LIST_FIRST = (
    f"SELECT {BASIC} FROM articles WHERE articles.delete_time IS NULL "
    "ORDER BY articles.create_time DESC, articles.id DESC LIMIT %(limit)s"
)
LIST_DEEP = (
    f"SELECT {BASIC} FROM articles WHERE articles.delete_time IS NULL "
    "AND (articles.create_time, articles.id) < (%(after_time)s, %(after_id)s::uuid) "
    "ORDER BY articles.create_time DESC, articles.id DESC LIMIT %(limit)s"
)
Q = "websearch_to_tsquery(CAST('english' AS REGCONFIG), %(q)s)"
QT = f"CAST({Q} AS TEXT)"
# The query with its phrases (not negated ones) as ANDed words: every match meets it, and
# the GIN index answers it alone. PostgreSQL folds these CASEs when it plans with the value.
WORDS = f"regexp_replace({QT}, $re${PHRASE_OPERATOR}$re$, '&', 'g')"
BOUNDED = f"(strpos({QT}, '<') > 0 OR CAST(querytree({Q}) AS TEXT) = 'T')"
NEGATED = f"(strpos({QT}, '!(') > 0)"
# Ranking takes the query without its negations (querytree), unless nothing is left.
TREE = f"CAST(querytree({Q}) AS TEXT)"
RANKED = f"CASE WHEN ({TREE} = 'T' OR {TREE} = '') THEN {Q} ELSE CAST({TREE} AS TSQUERY) END"
# Where a phrase's search starts (the bench searches as the service: everyone's articles).
PHRASE_SINCE = (
    "SELECT articles.create_time FROM articles WHERE articles.delete_time IS NULL "
    f"ORDER BY articles.create_time DESC, articles.id DESC OFFSET {PHRASE_SCOPE - 1} LIMIT 1"
)
SINCE = f"AND CASE WHEN {BOUNDED} THEN articles.create_time >= %(since)s ELSE true END"
SEARCH_RANK = f"""
WITH candidates AS (
  SELECT matching.id AS id, matching.create_time AS create_time,
         matching.rank_vector AS rank_vector
  FROM (
    SELECT articles.id AS id, articles.create_time AS create_time,
           articles.rank_vector AS rank_vector, articles.search_vector AS search_vector
    FROM articles
    WHERE articles.delete_time IS NULL AND numnode({Q}) > 0 AND CASE
      WHEN {NEGATED} THEN (articles.search_vector @@ CAST({WORDS} AS TSQUERY)) IS TRUE
      WHEN {BOUNDED} THEN articles.search_vector @@ CAST({WORDS} AS TSQUERY)
      ELSE articles.search_vector @@ {Q} END /*since*/
    ORDER BY articles.create_time DESC, articles.id DESC
    LIMIT CASE WHEN {BOUNDED} THEN {PHRASE_WINDOW} ELSE {SEARCH_CANDIDATES} END) AS matching
  WHERE CASE WHEN {BOUNDED} THEN matching.search_vector @@ {Q} ELSE true END
  ORDER BY matching.create_time DESC, matching.id DESC LIMIT {SEARCH_CANDIDATES})
SELECT anon_1.id, anon_1.rank, anon_1.create_time, querytree({Q}) AS tree FROM (
  SELECT candidates.id AS id, candidates.create_time AS create_time,
         CASE WHEN (ts_filter(candidates.rank_vector, '{{a}}') @@ {RANKED}) THEN 1.0 ELSE 0.0 END
         + CAST(ts_rank(candidates.rank_vector, {RANKED}, 32) AS FLOAT) AS rank
  FROM candidates) AS anon_1
ORDER BY anon_1.rank DESC, anon_1.create_time DESC, anon_1.id DESC LIMIT %(limit)s
"""
# The snippet: the text of 1,600 characters of content_html from 300 before the term.
WINDOW = (
    "CASE WHEN at.start > 1 THEN regexp_replace(substr(articles.content_html, at.start, 1600), "
    "'^[^<>]*>', '') ELSE substr(articles.content_html, at.start, 1600) END"
)
PLAIN = (
    f"btrim(regexp_replace(replace(regexp_replace({WINDOW}, '<[^>]*(>|$)', ' ', 'g'), "
    "'>', '&gt;'), '\\s\\s+|[\\n\\r\\t]', ' ', 'g'))"
)
SEARCH_PAGE = f"""
SELECT {BASIC}, btrim(ts_headline(CAST('english' AS REGCONFIG),
  concat_ws(' ', nullif(replace(replace(replace(articles.excerpt,
    '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), ''), {PLAIN}),
  {Q}, 'MaxFragments=2, MinWords=8, MaxWords=24, StartSel=<b>, StopSel=</b>')) AS snippet
FROM articles JOIN LATERAL (SELECT greatest(1, strpos(lower(left(articles.content_html, 120000)),
  %(term)s) - 300) AS start OFFSET 0) AS at ON true
WHERE articles.id = ANY(%(ids)s::uuid[])
"""


def call_for(client: str, params: dict, worker: int = 0) -> Any:
    """A function(cursor) doing what the server does in the database for one call."""
    if client == "list_first":
        args = {"limit": LIST_PAGE_SIZE + 1}
        return lambda cur: _fetch(cur, LIST_FIRST, args)
    if client == "list_deep":
        after_time, after_id = params["deep_cursor"]
        args = {"limit": LIST_PAGE_SIZE + 1, "after_time": after_time, "after_id": after_id}
        return lambda cur: _fetch(cur, LIST_DEEP, args)
    if client.startswith("search_"):
        query = params[client.replace("search_", "") + "_query"]
        return lambda cur: search(cur, query)
    if client == "batch":  # PostgreSQL's own cost of the batch's rows (bench/copylimit.py)
        rows = copylimit.Rows(params, worker, BATCH_SIZE)
        return lambda cur: copylimit.copy_batch(cur, rows.batch())
    raise ValueError(f"no database limit for {client}")


def _fetch(cur: Any, sql: str, args: dict) -> list:
    cur.execute(sql, args)
    return cur.fetchall()


def search(cur: Any, query: str) -> list:
    """A first Search page as the service sees it (everyone's articles): rank, then rows."""
    args = {"q": query, "limit": SEARCH_PAGE_SIZE + 1}
    since = _fetch(cur, PHRASE_SINCE, {}) if MAY_BE_BOUNDED.search(query) else []
    if since:
        args["since"] = since[0][0]
    sql = SEARCH_RANK.replace("/*since*/", SINCE if since else "")
    rows = _fetch(cur, sql, args)
    if not rows:
        return []
    term = snippet_term(rows[0][3])  # the server's snippet window starts near this term
    ids = [str(r[0]) for r in rows[:SEARCH_PAGE_SIZE]]
    return _fetch(cur, SEARCH_PAGE, {"q": query, "ids": ids, "term": term})


def run_job(job: Job, conn: Any) -> dict:
    """`job.slots` threads, one connection each, calls back to back; same protocol as gRPC."""
    call = call_for(job.client, job.params, job.worker)
    connections = []
    for _ in range(job.slots):
        if job.client == "batch":
            db = copylimit.connect(job.target)
        else:
            db = psycopg2.connect(job.target, application_name="bench-dblimit")
            db.autocommit = True
        connections.append(db)
    try:
        for db in connections:
            with db.cursor() as cur:
                call(cur)  # connect, plan caches and buffers warm before the clock starts
        conn.send("ready")
        start = conn.recv()
        rec = Recorder(start + job.warmup, start + job.warmup + job.duration)
        lock = threading.Lock()

        def loop(db: Any) -> None:
            with db.cursor() as cur:
                while time.monotonic() < rec.end:
                    started = time.monotonic()
                    try:
                        call(cur)
                        code, detail = None, ""
                    except psycopg2.Error as error:
                        code, detail = f"SQLSTATE {error.pgcode}", str(error)
                    with lock:
                        rec.record(started, time.monotonic(), code, detail)

        threads = [threading.Thread(target=loop, args=(db,)) for db in connections]
        time.sleep(max(0.0, start - time.monotonic()))
        for t in threads:
            t.start()
        time.sleep(max(0.0, rec.begin - time.monotonic()))
        rec.cpu[0] = cpu_seconds()
        time.sleep(max(0.0, rec.end - time.monotonic()))
        rec.cpu[1] = cpu_seconds()
        for t in threads:
            t.join()
        return rec.result()
    finally:
        for db in connections:
            db.close()

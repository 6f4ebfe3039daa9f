"""What the scenarios need, read from the loaded database (so `run` works on any bench dataset):
article ids, users, search words picked by their document frequency, a deep page token."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from typing import Any

import grpc
import psycopg2
from blogstore.v1 import articles_pb2, articles_pb2_grpc, usage_pb2, usage_pb2_grpc

from bench.corpus import Corpus
from bench.dataset import BENCH_PASSWORD
from bench.scenarios import CHANNEL_OPTIONS, LIST_PAGE_SIZE
from storage.credentials import API_KEY_DISPLAY_LENGTH, API_KEY_PREFIX, digest, new_secret
from storage.lifecycle.pgtools import one_row

DEEP_PAGES = 1000
_WORD = re.compile(r"[a-z]+")
DF_SQL = (
    "SELECT count(*) FROM articles WHERE delete_time IS NULL "
    "AND search_vector @@ websearch_to_tsquery('english', %s)"
)


def params(
    url: str, server: Any, need: set[str], seed: int, phrase: str | None = None
) -> tuple[dict, dict]:
    rng = random.Random(seed)
    out: dict[str, Any] = {"auth_password": BENCH_PASSWORD}
    facts: dict[str, Any] = {}
    metadata = (("authorization", f"Bearer {server.key}"),)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM articles WHERE delete_time IS NULL")
        total = facts["live_articles"] = one_row(cur)[0]
        for table in ("users", "pipelines", "usage_events"):
            cur.execute(f"SELECT count(*) FROM {table}")
            facts[table] = one_row(cur)[0]
        cur.execute(
            "SELECT id FROM articles WHERE delete_time IS NULL ORDER BY random() LIMIT 5000"
        )
        ids = [str(r[0]) for r in cur.fetchall()]
        cur.execute(
            "SELECT id, username FROM users WHERE username LIKE 'bench-user-%%' "
            "ORDER BY username LIMIT 1000"
        )
        users = cur.fetchall()
        if not ids or not users:
            raise SystemExit("the database holds no bench dataset: run `python -m bench load`")
        out["article_ids"] = ids
        out["update_ids"] = ids[-64:]  # one article per in-flight UpdateArticle slot
        if "record" in need:  # one competitor per in-flight RecordCompetitorCheck slot
            cur.execute("SELECT id FROM competitors ORDER BY id DESC LIMIT 64")
            out["record_ids"] = [str(r[0]) for r in cur.fetchall()]
        out["user_ids"] = [str(u[0]) for u in users]
        out["usage_user_id"] = str(users[0][0])
        out["auth_login"] = users[0][1]
        out["auth_logins"] = [u[1] for u in users]
        if "get_user" in need:
            out.update(user_key(cur))
        if need & {"search_common", "search_rare", "search_phrase"}:
            cur.execute(
                # Ordered by content, not id (ids are random): the same seed and size pick the
                # same words on every load.
                "SELECT content_markdown FROM articles WHERE delete_time IS NULL "
                "ORDER BY content_hash LIMIT 300"
            )
            texts = [r[0].lower() for r in cur.fetchall()]
            out.update(queries(cur, texts, total, rng, facts, phrase))
    corpus = Corpus(seed + 1)
    templates = []
    for _ in range(20):
        values = corpus.article(rng)
        values["status"] = articles_pb2.ARTICLE_STATUS_DRAFT
        templates.append(articles_pb2.Article(**values).SerializeToString())
    out["templates"] = templates
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        if need & {"usage", "usage_log"}:
            usage_pb2_grpc.UsageServiceStub(channel).SetUsageLimits(
                usage_pb2.SetUsageLimitsRequest(
                    limits=usage_pb2.UsageLimits(
                        user_id=out["usage_user_id"], cost_limit_micros=10**15, article_limit=10**9
                    )
                ),
                metadata=metadata,
            )
        if "list_deep" in need:
            out.update(
                deep_page(articles_pb2_grpc.ArticlesServiceStub(channel), metadata, total, facts)
            )
    return out, facts


def queries(
    cur: Any, texts: list[str], total: int, rng: random.Random, facts: dict, given: str | None
) -> dict:
    """A common word (in the most sampled articles), a rare one (document frequency about
    0.02-0.2% of the articles, at least 2) and a phrase of two frequent adjacent words, unless
    one is `given` (its document frequency is not counted: at 1M that reads every vector)."""
    docs: Counter[str] = Counter()
    for text in texts:
        docs.update(sorted(set(_WORD.findall(text))))  # sorted: no hash-seed order

    def df(query: str) -> int:
        cur.execute(DF_SQL, (query,))
        return one_row(cur)[0]

    common = docs.most_common(1)[0][0]
    low, high = max(2, total // 5000), max(10, total // 500)
    singles = [w for w, n in docs.items() if n == 1 and len(w) > 3]
    rng.shuffle(singles)
    rare, rare_df = None, 0
    for word in singles[:80]:
        n = df(word)
        if low <= n <= high:
            rare, rare_df = word, n
            break
        if n and (rare is None or abs(n - high) < abs(rare_df - high)):
            rare, rare_df = word, n
    frequent = {w for w, n in docs.items() if n >= 0.1 * len(texts)}
    phrase, phrase_df = given, "not counted (given)"
    for _ in range(0 if given else 200):
        words = _WORD.findall(rng.choice(texts))
        i = rng.randrange(len(words) - 1)
        if words[i] in frequent and words[i + 1] in frequent and words[i] != words[i + 1]:
            candidate = f'"{words[i]} {words[i + 1]}"'
            n = df(candidate)
            if n >= 2:
                phrase, phrase_df = candidate, n
                break
    facts["common_query"] = f"{common!r} matches {df(common)} of {total} articles"
    facts["rare_query"] = f"{rare!r} matches {rare_df}"
    facts["phrase_query"] = f"{phrase} matches {phrase_df}"
    return {"common_query": common, "rare_query": rare or common, "phrase_query": phrase or common}


def user_key(cur: Any) -> dict:
    """A new API key of the bench user owning the most articles, and up to 5,000 of them."""
    cur.execute(
        "SELECT user_id FROM articles WHERE delete_time IS NULL AND user_id IS NOT NULL "
        "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"
    )
    (owner,) = one_row(cur)
    key = new_secret(API_KEY_PREFIX)
    cur.execute(
        "INSERT INTO api_keys (user_id, name, prefix, secret_hash) VALUES (%s, 'bench', %s, %s)",
        (owner, key[:API_KEY_DISPLAY_LENGTH], digest(key)),
    )
    cur.execute(
        "SELECT id FROM articles WHERE user_id = %s AND delete_time IS NULL "
        "ORDER BY random() LIMIT 5000",
        (owner,),
    )
    return {"user_key": key, "user_article_ids": [str(r[0]) for r in cur.fetchall()]}


def deep_page(stub: Any, metadata: tuple, total: int, facts: dict) -> dict:
    """The token of the page DEEP_PAGES pages in (or the deepest full page of a smaller
    dataset), and its keyset cursor for the SQL limit."""
    depth = min(DEEP_PAGES, total // LIST_PAGE_SIZE - 1)
    token, last = "", None
    for _ in range(depth):
        reply = stub.ListArticles(
            articles_pb2.ListArticlesRequest(
                page_size=LIST_PAGE_SIZE, page_token=token, view=articles_pb2.ARTICLE_VIEW_BASIC
            ),
            metadata=metadata,
            timeout=60,
        )
        token, last = reply.next_page_token, reply.articles[-1]
    facts["deep_page"] = f"page {depth + 1} ({depth * LIST_PAGE_SIZE} articles in)" + (
        "" if depth == DEEP_PAGES else f"; the dataset is too small for {DEEP_PAGES + 1}"
    )
    if last is None:
        return {"deep_token": "", "deep_cursor": None}
    cursor = (last.create_time.ToDatetime(tzinfo=dt.UTC), last.id)
    return {"deep_token": token, "deep_cursor": cursor}

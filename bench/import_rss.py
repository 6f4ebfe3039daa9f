"""`python -m bench run --import-rss`: the server's RSS throughout a continuous import (issue 17).

A fresh server (one service key sends everything, so its batch share is raised to the number
of threads; every other setting at its default, or `--server-env`) takes THREADS threads of
1000-article BatchCreateArticles calls for SECONDS; its process tree's RSS is sampled every
INTERVAL seconds from before the first call until the last call has returned. A refusal that
asks to be sent again (RESOURCE_EXHAUSTED or UNAVAILABLE with a google.rpc.RetryInfo) is sent
again, the same request, after the delay it names, as a client would: no write is lost. The
rows written are counted from the replies and checked against the database afterwards.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import grpc
import psycopg2
from blogstore.v1 import articles_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.run import SERVER_ENV
from bench.scenarios import BATCH_SIZE, CHANNEL_OPTIONS, Batch
from bench.servers import RssSampler, start_server

THREADS = 8
SECONDS = 90.0
INTERVAL = 0.2
RSS_TARGET_MB = 200
RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def retry_delay(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay a refusal carries, or None (then it is not retried)."""
    if error.code() not in RETRIED:  # type: ignore[attr-defined]
        return None
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def _live_articles(url: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM articles")
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row else 0


def import_rss(
    harness: Any, seconds: float = SECONDS, threads: int = THREADS, interval: float = INTERVAL
) -> dict:
    env = {**SERVER_ENV, "BLOGSTORE_MAX_BATCHES_PER_PRINCIPAL": str(threads)}
    assert harness.server is not None
    key = harness.server.key
    harness.server.stop()  # a fresh server: its idle RSS, nothing from the preparation
    server = start_server(harness.url, key=key, extra_env=env)
    harness.server = server
    time.sleep(2.0)
    sampler = RssSampler(server, interval)
    idle = sampler.sample()
    before = _live_articles(harness.url)
    counts = {"calls": 0, "articles": 0, "retried": {}, "errors": {}}
    lock = threading.Lock()
    end = time.monotonic() + seconds
    metadata = (("authorization", f"Bearer {key}"),)

    def work(worker: int) -> None:
        client = Batch(harness.params, worker, 1)
        channel = grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS)
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        try:
            while time.monotonic() < end:
                request = client.request(None)
                while True:
                    try:
                        reply = stub.BatchCreateArticles(request, metadata=metadata, timeout=300)
                    except grpc.RpcError as error:
                        delay = retry_delay(error)
                        name = error.code().name  # type: ignore[attr-defined]
                        with lock:
                            bucket = counts["errors"] if delay is None else counts["retried"]
                            bucket[name] = bucket.get(name, 0) + 1
                        if delay is None:
                            break
                        time.sleep(delay)
                        continue
                    with lock:
                        counts["calls"] += 1
                        counts["articles"] += len(reply.articles)
                    break
        finally:
            channel.close()

    harness.log(f"continuous import: {threads} threads of {BATCH_SIZE}-article calls, {seconds} s")
    started = time.monotonic()
    sampler.start()
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    sampler.stop()
    written = _live_articles(harness.url) - before
    samples = sampler.samples
    result = {
        "mode": "import-rss",
        "threads": threads,
        "seconds": seconds,
        "interval": interval,
        "server_env": env,
        "elapsed_seconds": round(elapsed, 1),
        "idle_rss_mb": round(idle, 1),
        "peak_rss_mb": round(max(samples), 1),
        "p50_rss_mb": round(statistics.median(samples), 1),
        "p95_rss_mb": round(statistics.quantiles(samples, n=20)[-1], 1),
        "samples": len(samples),
        "calls": counts["calls"],
        "articles": counts["articles"],
        "articles_in_database": written,
        "articles_per_s": round(counts["articles"] / elapsed, 1),
        "retried": counts["retried"],
        "errors": counts["errors"],
    }
    harness.report["import_rss"] = result
    if counts["errors"] or written != counts["articles"]:
        harness.report["problems"].append(
            f"import-rss: errors {counts['errors']}, {counts['articles']} articles answered, "
            f"{written} in the database"
        )
    print(
        f"continuous import x{threads} for {seconds:g} s: server RSS idle {idle:.0f} MB, peak "
        f"{result['peak_rss_mb']:.0f} MB (p95 {result['p95_rss_mb']:.0f}, target < "
        f"{RSS_TARGET_MB}), {result['articles_per_s']:.0f} articles/s ({counts['calls']} calls "
        f"in {elapsed:.0f} s), retried {counts['retried']}, errors {counts['errors']}, "
        f"written {written}",
        flush=True,
    )
    return result

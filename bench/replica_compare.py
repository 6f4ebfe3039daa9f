"""Read replicas: GetArticle and ListArticles (first page) with one streaming replica against
the primary alone, side by side (`python -m bench.replica_compare`).

It makes a throwaway primary and a streaming replica of it (tests/replica_support.py: the
shared server allows no replication) on ports BLOGSTORE_TEST_CLUSTER_PORTS, loads a bulk
dataset into the primary, and runs `bench run --replica-compare`: two servers of this
checkout on that database, one with BLOGSTORE_REPLICA_URLS naming the replica, one without,
measured in alternating rounds at each number of calls in flight. The bench's own servers
take their ports from BLOGSTORE_BENCH_PORTS when set.

Both clusters run on this machine: a replica here adds no CPU, it shares the same cores, so
the ratio shows what routing costs or saves (a second backend's caches, fewer lock waits on
the primary), not the scale-out a replica on its own machine gives.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import psycopg2

from bench.compare import (
    SIDE_ALIGN,
    SIDE_HEADER,
    calls_ratio,
    merge,
    round_median,
    side_cells,
)
from bench.scenarios import BY_CLIENT
from bench.servers import Managed, start_server

ROUNDS = 2
PRIMARY, REPLICA = "primary only", "one replica"
# One principal (the bench's service key) sends every call: without a larger share (3/4 of
# the threads) a part of 32 in flight is refused at once (RESOURCE_EXHAUSTED). The article
# cache is off on both sides: it would answer GetArticle from memory, and routing is measured.
SHARE = {"BLOGSTORE_MAX_CALLS_PER_SERVICE": "64", "BLOGSTORE_ARTICLE_CACHE_ENTRIES": "0"}
CLIENTS = ("get", "list_first")


def replica_compare(harness: Any, replica_url: str, rounds: int | None = None) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None
    url, key = harness.url, harness.server.key
    sides: dict[str, Managed] = {}
    try:
        sides[PRIMARY] = start_server(url, key=key, extra_env=SHARE)
        sides[REPLICA] = start_server(
            url, key=key, extra_env={**SHARE, "BLOGSTORE_REPLICA_URLS": replica_url}
        )
        for client in CLIENTS:
            scenario = BY_CLIENT[client]
            for concurrency in harness.opts.concurrency:
                runs: dict[str, list[dict]] = {PRIMARY: [], REPLICA: []}
                on_replica = 0
                for r in range(rounds):
                    for name in (PRIMARY, REPLICA) if r % 2 == 0 else (REPLICA, PRIMARY):
                        harness.log(f"{scenario.name} x{concurrency}, {name} ({r + 1}/{rounds})")
                        before = _replica_transactions(replica_url)
                        runs[name].append(
                            harness.measure("grpc", sides[name], scenario, concurrency, 1)
                        )
                        if name == REPLICA:
                            on_replica += _replica_transactions(replica_url) - before
                result = {
                    "scenario": scenario.name,
                    "concurrency": concurrency,
                    "rounds": rounds,
                    "duration": harness.opts.duration,
                    "sides": {n: merge(s, harness.opts.duration) for n, s in runs.items()},
                    "replica_transactions": on_replica,
                    "errors": {n: _errors(s) for n, s in runs.items()},
                    "loadavg": tuple(round(x, 2) for x in os.getloadavg()),
                }
                judge(harness.report, result)
                harness.report.setdefault("replica_compare", []).append(result)
    finally:
        for managed in sides.values():
            managed.stop()


def _errors(summaries: list[dict]) -> dict[str, Any]:
    """A side's failed calls by code, with one sample message each."""
    counts: dict[str, int] = {}
    samples: dict[str, str] = {}
    for summary in summaries:
        for code, count in summary["errors"].items():
            counts[code] = counts.get(code, 0) + count
        samples.update(summary.get("error_samples") or {})
    return {"counts": counts, "samples": samples}


def _replica_transactions(replica_url: str) -> int:
    """Transactions the replica's database has run (its reads; the poller's few too)."""
    with psycopg2.connect(replica_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row else 0


def judge(report: dict, result: dict) -> None:
    sides = result["sides"]
    replica, primary = sides[REPLICA], sides[PRIMARY]
    ratio = calls_ratio(replica, primary)
    result["replica_vs_primary"] = ratio
    result["round_median"] = round_median(replica, primary)
    label = f"{result['scenario']} x{result['concurrency']}"
    report["notes"].append(
        f"{label}: one replica / primary only = {ratio:.3f} (no limit: the replica shares "
        f"this machine's cores); {replica['calls_per_s']:.0f} vs "
        f"{primary['calls_per_s']:.0f} calls/s; replica transactions "
        f"{result['replica_transactions']:,}; load {result['loadavg']}"
    )
    if any(side["errors"] for side in sides.values()):
        report["problems"].append(f"{label}: errors in the replica comparison: {result['errors']}")


def markdown(report: dict) -> str:
    lines = [
        f"| scenario | in flight | side | {SIDE_HEADER} | replica / primary "
        "| load (1, 5, 15 min) |",
        f"|---|--:|---|{SIDE_ALIGN}|--:|---|",
    ]
    for result in report.get("replica_compare", []):
        for name, s in result["sides"].items():
            ratio = f"**{result['replica_vs_primary']:.3f}**" if name == REPLICA else ""
            load = ", ".join(str(x) for x in result["loadavg"]) if name == REPLICA else ""
            lines.append(
                f"| {result['scenario']} | {result['concurrency']} | {name} "
                f"| {side_cells(s)} | {ratio} | {load} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_compare", description=__doc__)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args(argv)

    from bench import dataset
    from bench.run import Harness, Options
    from tests.replica_support import replicated_clusters

    with replicated_clusters() as pair:
        print(f"primary {pair.primary_url}, replica {pair.replica_url}", file=sys.stderr)
        stats = dataset.load(
            pair.primary_url, articles=args.articles, users=None, bulk=True, seed=7
        )
        print(f"loaded: {stats.get('load')}", file=sys.stderr)
        pair.wait_caught_up(timeout=300)
        opts = Options(
            articles=args.articles,
            database_url=pair.primary_url,
            concurrency=tuple(int(x) for x in args.concurrency.split(",")),
            warmup=args.warmup,
            duration=args.duration,
            rounds=args.rounds,
            replica_url=pair.replica_url,
        )
        return Harness(opts).run()


if __name__ == "__main__":
    sys.exit(main())

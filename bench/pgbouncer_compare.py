"""`python -m bench run --pgbouncer-compare`: GetArticle through PgBouncer against direct, side
by side.

Three servers of this checkout on one dataset, called in rotating rounds:
- direct: DATABASE_URL straight to PostgreSQL (BLOGSTORE_DB_PREPARE=auto: prepared);
- direct, no PREPARE: the same with BLOGSTORE_DB_PREPARE=off, to tell the hop's cost from
  that of planning each call;
- PgBouncer: DATABASE_URL through a PgBouncer of ours in transaction mode (bench/pgbouncer.py,
  default_pool_size 20), LISTEN direct; auto finds the pooler and does not prepare.
PgBouncer's own CPU per call is read from its process.
"""

from __future__ import annotations

from typing import Any

import psutil

from bench.compare import (
    SIDE_ALIGN,
    SIDE_HEADER,
    calls_ratio,
    cell,
    merge,
    round_median,
    side_cells,
)
from bench.pgbouncer import PgBouncer
from bench.scenarios import BY_CLIENT
from bench.servers import Managed, start_server

# Our target: PgBouncer costs GetArticle at most a quarter of its calls/s on this machine,
# where it shares the two cores with the server, PostgreSQL and the load generator.
PGBOUNCER_LIMIT = 0.75
ROUNDS = 2
DIRECT, UNPREPARED, POOLED = "direct", "direct, no PREPARE", "PgBouncer"
SIDES = (DIRECT, UNPREPARED, POOLED)


def pgbouncer_compare(harness: Any, rounds: int | None = None) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None
    url, key = harness.url, harness.server.key
    bouncer = PgBouncer(url)
    servers: dict[str, Managed] = {}
    # One service key sends every call: its share must hold them all, or the calls past it
    # are refused alike on every side (RESOURCE_EXHAUSTED) instead of queueing. The article
    # cache is off: it would answer GetArticle from memory, and the hop is what is measured.
    share = {
        "BLOGSTORE_MAX_CALLS_PER_SERVICE": str(max(harness.opts.concurrency)),
        "BLOGSTORE_ARTICLE_CACHE_ENTRIES": "0",
    }
    try:
        servers[DIRECT] = start_server(url, key=key, extra_env=share)
        servers[UNPREPARED] = start_server(
            url, key=key, extra_env={**share, "BLOGSTORE_DB_PREPARE": "off"}
        )
        servers[POOLED] = start_server(
            bouncer.url_for(url), key=key,
            extra_env={**share, "BLOGSTORE_DIRECT_DATABASE_URL": url},
        )  # fmt: skip
        pgbouncer = psutil.Process(bouncer.process.pid)
        scenario = BY_CLIENT["get"]
        for concurrency in harness.opts.concurrency:
            runs: dict[str, list[dict]] = {name: [] for name in SIDES}
            bouncer_ms: list[float] = []
            for r in range(rounds):
                order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
                for name in order:
                    harness.log(f"GetArticle x{concurrency}, {name} (round {r + 1}/{rounds})")
                    before = sum(pgbouncer.cpu_times()[:2])
                    summary = harness.measure(
                        "grpc", servers[name], scenario, concurrency, 1, key=key,
                        params=harness.params,
                    )  # fmt: skip
                    if name == POOLED and summary["ok"]:
                        spent = sum(pgbouncer.cpu_times()[:2]) - before  # warm-up included
                        bouncer_ms.append(1000 * spent / summary["ok"])
                    runs[name].append(summary)
            result = {
                "scenario": scenario.name,
                "concurrency": concurrency,
                "rounds": rounds,
                "duration": harness.opts.duration,
                "sides": {n: merge(s, harness.opts.duration) for n, s in runs.items()},
                "pgbouncer_cpu_ms_per_call_max": max(bouncer_ms) if bouncer_ms else None,
            }
            judge(harness.report, result)
            harness.report.setdefault("pgbouncer_compare", []).append(result)
    finally:
        for managed in servers.values():
            managed.stop()
        bouncer.stop()


def judge(report: dict, result: dict) -> None:
    sides = result["sides"]
    pooled, direct = sides[POOLED], sides[DIRECT]
    ratio = calls_ratio(pooled, direct)
    result["pooled_vs_direct"] = ratio
    result["pooled_vs_direct_round_median"] = round_median(pooled, direct)
    label = f"GetArticle x{result['concurrency']}"
    verdict = "met" if ratio >= PGBOUNCER_LIMIT else "NOT MET"
    report["notes"].append(
        f"{label}: PgBouncer / direct = {ratio:.3f} (limit >= {PGBOUNCER_LIMIT}: {verdict}); "
        f"{pooled['calls_per_s']:.0f} vs {direct['calls_per_s']:.0f} calls/s "
        f"(direct without PREPARE {sides[UNPREPARED]['calls_per_s']:.0f})"
    )
    if any(side["errors"] for side in sides.values()):
        report["problems"].append(f"{label}: errors in the PgBouncer comparison")


def markdown(report: dict) -> str:
    lines = [
        f"| scenario | in flight | side | {SIDE_HEADER} | PgBouncer CPU ms/call | / direct |",
        f"|---|--:|---|{SIDE_ALIGN}|--:|--:|",
    ]
    for result in report.get("pgbouncer_compare", []):
        direct = result["sides"][DIRECT]
        for name, s in result["sides"].items():
            ratio = calls_ratio(s, direct)
            shown = f"**{ratio:.3f}**" if name == POOLED else f"{ratio:.3f}"
            bouncer = cell(result["pgbouncer_cpu_ms_per_call_max"], ".3f") if name == POOLED else ""
            lines.append(
                f"| {result['scenario']} | {result['concurrency']} | {name} "
                f"| {side_cells(s)} | {bouncer} | {shown} |"
            )
    return "\n".join(lines)

"""`python -m bench run --rls-compare`: what row-level security costs GetArticle and
ListArticles (first page), side by side.

Two servers of this checkout on one dataset: RLS on (the default BLOGSTORE_DB_ROLE: every
transaction switches to blogstore_app or blogstore_app_all and sets its user and scope) and
RLS off (BLOGSTORE_DB_ROLE=none: the connecting owner, whom RLS leaves alone). Each is called
by the service principal (the bench's key: every row, role blogstore_app_all) and by a user
(an API key of the user owning most articles, its own articles: role blogstore_app, the
owner policy), in alternating rounds (on off, off on, ...).
"""

from __future__ import annotations

from typing import Any

import grpc
import psycopg2
from blogstore.v1 import users_pb2, users_pb2_grpc

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
from storage.lifecycle.pgtools import one_row

RLS_LIMIT = 0.95  # RLS on / off, calls/s: at most 5% of the throughput
ROUNDS = 2
ON, OFF = "RLS on", "RLS off"
CLIENTS = ("get", "list_first")


def rls_compare(harness: Any, rounds: int | None = None) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None
    url, key = harness.url, harness.server.key
    principals = {"service": (key, harness.params), "user": _user(harness, key)}
    sides: dict[str, Managed] = {}
    try:
        sides[ON] = start_server(url, key=key)
        sides[OFF] = start_server(url, key=key, extra_env={"BLOGSTORE_DB_ROLE": "none"})
        for principal, (token, params) in principals.items():
            for client in CLIENTS:
                scenario = BY_CLIENT[client]
                for concurrency in harness.opts.concurrency:
                    runs: dict[str, list[dict]] = {ON: [], OFF: []}
                    for r in range(rounds):
                        for name in (ON, OFF) if r % 2 == 0 else (OFF, ON):
                            harness.log(
                                f"{scenario.name} as {principal} x{concurrency}, {name} "
                                f"(round {r + 1}/{rounds})"
                            )
                            runs[name].append(
                                harness.measure(
                                    "grpc", sides[name], scenario, concurrency, 1,
                                    key=token, params=params,
                                )
                            )  # fmt: skip
                    result = {
                        "scenario": scenario.name,
                        "principal": principal,
                        "concurrency": concurrency,
                        "rounds": rounds,
                        "duration": harness.opts.duration,
                        "sides": {n: merge(s, harness.opts.duration) for n, s in runs.items()},
                    }
                    judge(harness.report, result)
                    harness.report.setdefault("rls_compare", []).append(result)
    finally:
        for managed in sides.values():
            managed.stop()


def _user(harness: Any, service_key: str) -> tuple[str, dict]:
    """An API key of the user owning most articles, and params naming its articles."""
    with psycopg2.connect(harness.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT user_id::text, count(*) FROM articles WHERE delete_time IS NULL "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        )
        user_id, count = one_row(cur)
        cur.execute(
            "SELECT id::text FROM articles WHERE user_id = %s AND delete_time IS NULL "
            "ORDER BY id LIMIT 1000",
            (user_id,),
        )
        article_ids = [row[0] for row in cur.fetchall()]
    with grpc.insecure_channel(harness.server.target) as channel:
        users = users_pb2_grpc.UsersServiceStub(channel)
        request = users_pb2.CreateApiKeyRequest(user_id=user_id, name="bench-rls", service="bench")
        metadata = (("authorization", f"Bearer {service_key}"),)
        api_key = users.CreateApiKey(request, metadata=metadata, timeout=10).api_key
    harness.report["notes"].append(f"RLS compare: the user owns {count:,} live articles")
    return api_key, {**harness.params, "article_ids": article_ids}


def judge(report: dict, result: dict) -> None:
    sides = result["sides"]
    on, off = sides[ON], sides[OFF]
    ratio = calls_ratio(on, off)
    result["on_vs_off"] = ratio
    result["on_vs_off_round_median"] = round_median(on, off)
    label = f"{result['scenario']} as {result['principal']} x{result['concurrency']}"
    verdict = "met" if ratio >= RLS_LIMIT else "NOT MET"
    report["notes"].append(
        f"{label}: RLS on / off = {ratio:.3f} (limit >= {RLS_LIMIT}: {verdict}); "
        f"{on['calls_per_s']:.0f} vs {off['calls_per_s']:.0f} calls/s"
    )
    if any(side["errors"] for side in sides.values()):
        report["problems"].append(f"{label}: errors in the RLS comparison")


def markdown(report: dict) -> str:
    lines = [
        f"| scenario | principal | in flight | side | {SIDE_HEADER} | on / off |",
        f"|---|---|--:|---|{SIDE_ALIGN}|--:|",
    ]
    for result in report.get("rls_compare", []):
        for name, s in result["sides"].items():
            ratio = f"**{result['on_vs_off']:.3f}**" if name == ON else ""
            lines.append(
                f"| {result['scenario']} | {result['principal']} | {result['concurrency']} "
                f"| {name} | {side_cells(s)} | {ratio} |"
            )
    return "\n".join(lines)

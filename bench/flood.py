"""`python -m bench run --login-flood`: GetCurrentUser's p95 quiet, and under a login flood.

A user calls GetCurrentUser (2 in flight) alone, then while 16 anonymous clients call
Authenticate back to back with right passwords of random bench users (a bcrypt check each,
no back-off: every success resets its login). The flood's p95 over the quiet p95 is printed
beside its limit (3). `--baseline-checkout DIR` measures that checkout's server the same way
(e.g. main, where bcrypt ran on the request threads). Rounds alternate quiet and flood on
each side, so that the rest of the shared machine lands on both alike.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import grpc
from blogstore.v1 import users_pb2, users_pb2_grpc

from bench import report
from bench.jobs import Job
from bench.servers import Managed, checkout_of, machine_busy, start_server, tree_cpu

FLOOD_LIMIT = 3.0  # GetCurrentUser p95 under the flood / quiet
FLOOD_CLIENTS = 16
USER_IN_FLIGHT = 2
ROUNDS = 2
THIS = "this checkout"


def login_flood(harness: Any, baseline: Path | None = None, rounds: int | None = None) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None
    sides: dict[str, Managed] = {THIS: harness.server}
    try:
        if baseline is not None:
            sides[f"baseline {baseline.resolve().name}"] = start_server(
                harness.url, key=harness.server.key, checkout=checkout_of(baseline)
            )
        for name, server in sides.items():
            token = _user_token(server, harness.params)
            runs: dict[str, list[dict]] = {"quiet": [], "flood": []}
            for r in range(rounds):
                for phase in ("quiet", "flood"):
                    harness.log(f"GetCurrentUser, {phase}, {name} (round {r + 1}/{rounds})")
                    runs[phase].append(_measure(harness, server, token, flood=phase == "flood"))
            judge(harness.report, name, runs)
    finally:
        for name, managed in sides.items():
            if name != THIS:
                managed.stop()


def _user_token(server: Managed, params: dict) -> str:
    with grpc.insecure_channel(server.target) as channel:
        reply = users_pb2_grpc.UsersServiceStub(channel).Authenticate(
            users_pb2.AuthenticateRequest(
                login=params["auth_logins"][-1], password=params["auth_password"]
            ),
            timeout=30,
        )
    return reply.access_token


def _measure(harness: Any, server: Managed, token: str, *, flood: bool) -> dict:
    opts = harness.opts
    common = {"warmup": opts.warmup, "duration": opts.duration, "params": harness.params}
    jobs = [Job("grpc", server.target, "current_user", slots=USER_IN_FLIGHT, worker=0,
                key=token, **common)]  # fmt: skip
    if flood:
        jobs.append(Job("grpc", server.target, "auth_flood", slots=FLOOD_CLIENTS, worker=1,
                        **common))  # fmt: skip
    procs = server.processes()

    def window(begin: float, end: float) -> dict:
        time.sleep(max(0.0, begin - time.monotonic()))
        cpu0, machine0 = tree_cpu(procs), machine_busy()
        time.sleep(max(0.0, end - time.monotonic()))
        return {"server_cpu_s": tree_cpu(procs) - cpu0, "machine_s": machine_busy() - machine0}

    results, measured = harness.pool.run(jobs, window)
    out = {"user": report.summarize(results[:1], opts.duration)}
    if flood:
        out["flood"] = report.summarize(results[1:], opts.duration)
    # Cores busy: the server's, the load clients', the whole machine's.
    out["cores"] = {
        "server": measured.get("server_cpu_s", 0.0) / opts.duration,
        "clients": sum(r.get("cpu_seconds", 0.0) for r in results) / opts.duration,
        "machine": measured.get("machine_s", 0.0) / opts.duration,
    }
    return out


def judge(out: dict, side: str, runs: dict[str, list[dict]]) -> None:
    def median(phase: str, key: str, part: str = "user") -> float:
        values = [r[part][key] for r in runs[phase] if r[part].get(key) is not None]
        return statistics.median(values) if values else float("nan")

    quiet, flooded = median("quiet", "p95_ms"), median("flood", "p95_ms")
    ratio = flooded / quiet if quiet else float("inf")
    logins = median("flood", "calls_per_s", "flood")
    refused: dict[str, int] = {}
    for r in runs["flood"]:
        for code, n in r["flood"]["errors"].items():
            refused[code] = refused.get(code, 0) + n
    cores = {
        phase: {
            k: statistics.median(r["cores"][k] for r in runs[phase])
            for k in runs[phase][0]["cores"]
        }
        for phase in runs
    }
    result = {
        "side": side,
        "cores": cores,
        "quiet_p50_ms": median("quiet", "p50_ms"),
        "quiet_p95_ms": quiet,
        "flood_p50_ms": median("flood", "p50_ms"),
        "flood_p95_ms": flooded,
        "ratio": ratio,
        "user_errors": sum(sum(r["user"]["errors"].values()) for p in runs.values() for r in p),
        "logins_per_s": logins,
        "flood_refused": refused,
        "rounds_p95_ms": {p: [round(r["user"]["p95_ms"] or 0, 1) for r in runs[p]] for p in runs},
    }
    out.setdefault("login_flood", []).append(result)
    verdict = "met" if ratio <= FLOOD_LIMIT else "NOT MET"
    out["notes"].append(
        f"{side}: GetCurrentUser p95 flood / quiet = {ratio:.2f} (limit <= {FLOOD_LIMIT:g}: "
        f"{verdict}); {flooded:.1f} vs {quiet:.1f} ms; {logins:.1f} logins/s; "
        f"flood refused {refused or 'none'}; p95 per round {result['rounds_p95_ms']}; "
        "cores busy under flood: " + ", ".join(f"{k} {v:.2f}" for k, v in cores["flood"].items())
    )
    if side == THIS and ratio > FLOOD_LIMIT:
        out["problems"].append(f"GetCurrentUser p95 under a login flood: {ratio:.2f}x quiet")
    if result["user_errors"]:
        out["problems"].append(f"{side}: GetCurrentUser errors during the login flood")


def markdown(report_: dict) -> str:
    lines = [
        "| server | GetCurrentUser p50 / p95 quiet ms | p50 / p95 under flood ms | p95 flood / "
        "quiet (limit 3) | logins/s | flood calls refused |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for r in report_.get("login_flood", []):
        refused = ", ".join(f"{k} {v}" for k, v in r["flood_refused"].items()) or "none"
        lines.append(
            f"| {r['side']} | {r['quiet_p50_ms']:.1f} / {r['quiet_p95_ms']:.1f} "
            f"| {r['flood_p50_ms']:.1f} / {r['flood_p95_ms']:.1f} | **{r['ratio']:.2f}** "
            f"| {r['logins_per_s']:.1f} | {refused} |"
        )
    return "\n".join(lines)

"""`python -m bench run --cache-compare` / `--usage-compare`: against the no-op, in rounds.

Issue 17's targets as fractions of the no-op at 8 in flight (GetArticle >= 0.60 with a user's
API key and with a service key; RecordUsage >= 0.40) measured so that a shared, busy machine
weighs on every side alike: this checkout's server, the no-op server answering the same bytes
and, with `--baseline-checkout DIR`, that checkout's server (e.g. main before the change), one
after the other in rotating order (A B C, B C A, C A B, ...) for `--rounds` rounds. Each
round's ratio compares windows seconds apart; the figure given is the median of the rounds'
ratios.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.compare import merge, round_ratios
from bench.scenarios import Scenario
from bench.servers import Managed, checkout_of, start_server

# Of the no-op, at 8 in flight (issue 17), by scenario; the scenarios of --cache-compare and
# --usage-compare (bench/run.py's plan).
TARGETS = {"GetArticle (user key)": 0.60, "GetArticle": 0.60, "RecordUsage": 0.40}
CACHE = ("GetArticle (user key)", "GetArticle")
USAGE = ("RecordUsage",)
ROUNDS = 3
NOOP = "no-op"


def cache_compare(
    harness: Any,
    scenarios: list[Scenario],
    baseline: Path | None = None,
    rounds: int | None = None,
) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None and harness.noop is not None
    sides: dict[str, Managed] = {"blogstore": harness.server, NOOP: harness.noop}
    started: list[Managed] = []
    try:
        if baseline is not None:
            name = f"baseline {baseline.resolve().name}"
            sides[name] = start_server(
                harness.url, key=harness.server.key, checkout=checkout_of(baseline)
            )
            started.append(sides[name])
        names = list(sides)
        for scenario in scenarios:
            harness.set_noop_reply(scenario)
            for concurrency in harness.opts.concurrency:
                runs: dict[str, list[dict]] = {name: [] for name in names}
                for r in range(rounds):
                    shift = r % len(names)
                    for name in names[shift:] + names[:shift]:
                        harness.log(f"{scenario.name} x{concurrency}, {name} ({r + 1}/{rounds})")
                        summary = harness.measure("grpc", sides[name], scenario, concurrency, 1)
                        runs[name].append(summary)
                result = {
                    "scenario": scenario.name,
                    "concurrency": concurrency,
                    "rounds": rounds,
                    "sides": {n: merge(s, harness.opts.duration) for n, s in runs.items()},
                }
                _judge(harness.report, result)
                harness.report.setdefault("cache_compare", []).append(result)
    finally:
        for managed in started:
            managed.stop()


def _judge(report: dict, result: dict) -> None:
    sides = result["sides"]
    for name, side in sides.items():
        if name == NOOP:
            continue
        paired = round_ratios(side, sides[NOOP])
        side["x_noop"] = statistics.median(paired) if paired else None
        side["x_noop_rounds"] = [round(x, 2) for x in paired]
    mine = sides["blogstore"].get("x_noop") or 0.0
    line = f"{result['scenario']} x{result['concurrency']}: {mine:.2f} of the no-op"
    target = TARGETS[result["scenario"]]
    if result["concurrency"] == 8:
        line += f" (target >= {target}: {'met' if mine >= target else 'NOT MET'})"
    for name, side in sides.items():
        if name.startswith("baseline"):
            line += f"; {name} {side.get('x_noop') or 0:.2f}"
    report["notes"].append(line)


def markdown(report: dict) -> str:
    lines = [
        "| scenario | in flight | side | calls/s | per round | x no-op (median of rounds) "
        "| server CPU ms/call | other CPU % |",
        "|---|--:|---|--:|---|--:|--:|--:|",
    ]
    for result in report.get("cache_compare", []):
        for name, s in result["sides"].items():
            x = s.get("x_noop")
            per_round = ", ".join(f"{v:.0f}" for v in s["rounds_calls_per_s"])
            ratio = "" if x is None else f"**{x:.2f}** ({', '.join(map(str, s['x_noop_rounds']))})"
            lines.append(
                f"| {result['scenario']} | {result['concurrency']} | {name} "
                f"| {s['calls_per_s']:.0f} | {per_round} "
                f"| {ratio} "
                f"| {s['server_cpu_ms_per_call'] or 0:.2f} | {s['other_cpu_pct'] or 0:.0f} |"
            )
    return "\n".join(lines)

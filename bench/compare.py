"""`python -m bench run --metrics-compare`: what metrics cost GetArticle, side by side.

Two servers of this checkout on one dataset, one with metrics (BLOGSTORE_METRICS_PORT set,
the default) and one without (0), both with tracing off (no OTEL_* variable); optionally a
third, the server of a baseline checkout (`--baseline-checkout DIR`, e.g. main before
telemetry existed), to show that what is off costs nothing. They run together and are
measured in rotating rounds (A B C, B C A, C A B, ...), so that whatever else the shared
machine does lands on every side alike; a side's calls/s is its calls over its measured seconds.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.report import first_samples
from bench.scenarios import BY_CLIENT
from bench.servers import Managed, checkout_of, start_server

METRICS_LIMIT = 0.95  # metrics on / off, calls/s: at most 5% of the throughput
ROUNDS = 4
ON, OFF = "metrics on", "metrics off"


def metrics_compare(harness: Any, baseline: Path | None = None, rounds: int | None = None) -> None:
    rounds = rounds or ROUNDS
    assert harness.server is not None
    url, key = harness.url, harness.server.key
    scenario = BY_CLIENT["get"]
    sides: dict[str, Managed] = {}
    try:
        # Fresh servers with the same history (the harness's own one prepared the requests).
        sides[ON] = start_server(url, key=key, metrics=True)
        sides[OFF] = start_server(url, key=key, metrics=False)
        if baseline is not None:
            sides[f"baseline {baseline.resolve().name}"] = start_server(
                url, key=key, metrics=False, checkout=checkout_of(baseline)
            )
        for concurrency in harness.opts.concurrency:
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            names = list(sides)
            for r in range(rounds):
                # A Latin square: each side takes each place in the order equally often.
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    harness.log(f"GetArticle x{concurrency}, {name} (round {r + 1}/{rounds})")
                    summary = harness.measure("grpc", sides[name], scenario, concurrency, 1)
                    runs[name].append(summary)
            result = {
                "concurrency": concurrency,
                "rounds": rounds,
                "duration": harness.opts.duration,
                "sides": {name: merge(s, harness.opts.duration) for name, s in runs.items()},
            }
            judge(harness.report, result)
            harness.report.setdefault("metrics_compare", []).append(result)
    finally:
        for managed in sides.values():
            managed.stop()


def merge(summaries: list[dict], duration: float) -> dict:
    """One side over its rounds: total calls / total seconds; medians of the rest."""

    def median(key: str) -> float | None:
        values = [s[key] for s in summaries if s.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "ok": sum(s["ok"] for s in summaries),
        "errors": sum(sum(s["errors"].values()) for s in summaries),
        "error_samples": first_samples(summaries),  # for the errors above
        "calls_per_s": sum(s["ok"] for s in summaries) / (duration * len(summaries)),
        "rounds_calls_per_s": [round(s["calls_per_s"], 1) for s in summaries],
        "p50_ms": median("p50_ms"),
        "p95_ms": median("p95_ms"),
        "server_cpu_ms_per_call": median("server_cpu_ms_per_call"),
        "other_cpu_pct": median("other_cpu_pct"),
    }


def judge(report: dict, result: dict) -> None:
    sides, c = result["sides"], result["concurrency"]
    on, off = sides[ON], sides[OFF]
    ratio = calls_ratio(on, off)
    result["on_vs_off"] = ratio
    result["on_vs_off_round_median"] = round_median(on, off)
    verdict = "met" if ratio >= METRICS_LIMIT else "NOT MET"
    report["notes"].append(
        f"GetArticle x{c}: metrics on / off = {ratio:.3f} (limit >= {METRICS_LIMIT}: {verdict}); "
        f"{on['calls_per_s']:.0f} vs {off['calls_per_s']:.0f} calls/s; median of the rounds' "
        f"ratios {result['on_vs_off_round_median'] or 0:.3f}"
    )
    for name, side in sides.items():
        if name.startswith("baseline") and side["calls_per_s"]:
            result["off_vs_baseline"] = off["calls_per_s"] / side["calls_per_s"]
            report["notes"].append(
                f"GetArticle x{c}: metrics off / {name} = {result['off_vs_baseline']:.3f} "
                f"({off['calls_per_s']:.0f} vs {side['calls_per_s']:.0f} calls/s)"
            )
    if ratio < METRICS_LIMIT:
        report["problems"].append(f"GetArticle x{c}: metrics cost more than 5% ({ratio:.3f})")
    if any(side["errors"] for side in sides.values()):
        report["problems"].append(f"GetArticle x{c}: errors in the metrics comparison")


def markdown(report: dict) -> str:
    lines = [
        f"| in flight | side | {SIDE_HEADER} | other CPU % | on / off |",
        f"|--:|---|{SIDE_ALIGN}|--:|--:|",
    ]
    for result in report.get("metrics_compare", []):
        for name, s in result["sides"].items():
            ratio = ""
            if name == ON:
                ratio = f"**{result['on_vs_off']:.3f}**"
                if result.get("on_vs_off_round_median"):
                    ratio += f" (rounds: {result['on_vs_off_round_median']:.3f})"
            lines.append(
                f"| {result['concurrency']} | {name} | {side_cells(s)} "
                f"| {cell(s['other_cpu_pct'], '.0f')} "
                f"| {ratio} |"
            )
    return "\n".join(lines)


def calls_ratio(side: dict, base: dict) -> float:
    """side / base in calls/s over the whole run (0 when the base made no call)."""
    return side["calls_per_s"] / base["calls_per_s"] if base["calls_per_s"] else 0.0


def round_ratios(side: dict, base: dict) -> list[float]:
    """side / base per round: each round measures the sides back to back, so their ratio
    within a round is less exposed to what the rest of the machine did over minutes."""
    pairs = zip(side["rounds_calls_per_s"], base["rounds_calls_per_s"], strict=True)
    return [a / b for a, b in pairs if b]


def round_median(side: dict, base: dict) -> float | None:
    ratios = round_ratios(side, base)
    return statistics.median(ratios) if ratios else None


# The columns side_cells() fills, and their alignment row.
SIDE_HEADER = "calls/s | per round | p50 ms | p95 ms | server CPU ms/call"
SIDE_ALIGN = "--:|---|--:|--:|--:"


def side_cells(side: dict) -> str:
    """A side's SIDE_HEADER table cells."""
    return (
        f"{side['calls_per_s']:.1f} | {', '.join(f'{x:.0f}' for x in side['rounds_calls_per_s'])} "
        f"| {cell(side['p50_ms'])} | {cell(side['p95_ms'])} "
        f"| {cell(side['server_cpu_ms_per_call'], '.3f')}"
    )


def cell(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)

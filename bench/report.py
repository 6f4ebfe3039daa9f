"""Summaries of measured jobs, the stdout tables and the JSON file."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COPY_TARGET = 0.8  # BatchCreateArticles / one COPY of the same rows (issue 17)


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p * len(sorted_values)) - 1))]


def first_samples(results: list[dict]) -> dict[str, str]:
    """Each error code's first detail over `results` (processes' results or summaries)."""
    samples: dict[str, str] = {}
    for r in results:
        for code, detail in r.get("error_samples", {}).items():
            samples.setdefault(code, detail)
    return samples


def summarize(results: list[dict], duration: float, cores: int = 2) -> dict:
    """Merge the per-process results of one measured job."""
    failures = [r["failure"] for r in results if "failure" in r]
    latencies = sorted(x for r in results if "failure" not in r for x in r["latencies_ms"])
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.get("errors", {}))
    ok = len(latencies)
    out: dict[str, Any] = {
        "ok": ok,
        "errors": dict(errors),
        "error_samples": first_samples(results),
        "calls_per_s": ok / duration,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": sum(latencies) / ok if ok else None,
        "client_cpu_s": sum(r.get("cpu_seconds", 0.0) for r in results),
    }
    if failures:
        out["failures"] = failures
    return out


def add_window(summary: dict, window: dict, duration: float, cores: int = 2) -> None:
    """Per-call CPU of the server and of PostgreSQL; how busy the machine was meanwhile."""
    calls = summary["ok"] + sum(summary["errors"].values())
    if "server_cpu_s" in window and calls:
        summary["server_cpu_ms_per_call"] = window["server_cpu_s"] * 1000 / calls
    if calls:
        summary["db_cpu_ms_per_call"] = window["db_cpu_s"] * 1000 / calls
    ours = window.get("server_cpu_s", 0.0) + window["db_cpu_s"] + summary["client_cpu_s"]
    summary["machine_busy_pct"] = 100 * window["machine_s"] / (cores * duration)
    summary["other_cpu_pct"] = 100 * max(0.0, window["machine_s"] - ours) / (cores * duration)
    for key in ("rss_peak_mb", "rss_peak_process_mb"):
        if key in window:
            summary[key] = window[key]


def failed(summary: dict | None) -> bool:
    return summary is not None and (
        summary["ok"] == 0 or bool(summary["errors"]) or "failures" in summary
    )


def ratios(row: dict) -> None:
    server = row["server"]
    for limit in ("noop", "db"):
        other = row.get(limit)
        if not other or not other["ok"] or not server["ok"]:
            continue
        row[f"{limit}_ratio"] = server["calls_per_s"] / other["calls_per_s"]
        row[f"{limit}_p95_ratio"] = server["p95_ms"] / other["p95_ms"]


def _f(value: Any, fmt: str = ".1f", width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


HEADER = (
    f"{'scenario':<28} {'in':>3} {'calls/s':>8} {'p50':>6} {'p95':>6} {'p99':>7} {'err':>4} "
    f"{'srv':>5} {'db':>5} {'RSS':>5} {'oth%':>4} | {'noop/s':>7} {'x':>5} {'p95x':>5} "
    f"| {'db/s':>7} {'x':>5} {'p95x':>5}"
)
LEGEND = (
    "latencies in ms; srv, db = server and PostgreSQL CPU ms per call; RSS = peak MB of the "
    "server tree;\noth% = CPU used by other processes on the machine meanwhile (% of all cores);"
    "\nx = calls/s as a fraction of the limit; p95x = p95 as a multiple of the "
    "limit's p95 (no-op server | same SQL via psycopg2)"
)


def row_line(row: dict) -> str:
    s = row["server"]
    errors = sum(s["errors"].values()) + (1 if "failures" in s else 0)
    name = row["scenario"] + (f" w{row['workers']}" if row.get("workers", 1) > 1 else "")
    line = (
        f"{name[:28]:<28} {row['concurrency']:>3} {s['calls_per_s']:>8.1f} "
        f"{_f(s['p50_ms'], '.1f', 6)} {_f(s['p95_ms'], '.1f', 6)} {_f(s['p99_ms'], '.1f', 7)} "
        f"{errors:>4} {_f(s.get('server_cpu_ms_per_call'), '.2f', 5)} "
        f"{_f(s.get('db_cpu_ms_per_call'), '.2f', 5)} {_f(s.get('rss_peak_mb'), '.0f', 5)} "
        f"{_f(s.get('other_cpu_pct'), '.0f', 4)}"
    )
    for limit in ("noop", "db"):
        other = row.get(limit)
        if other:
            line += (
                f" | {other['calls_per_s']:>7.1f} {_f(row.get(f'{limit}_ratio'), '.2f', 5)} "
                f"{_f(row.get(f'{limit}_p95_ratio'), '.2f', 5)}"
            )
        else:
            line += f" | {'':>7} {'':>5} {'':>5}"
    if row.get("window"):
        line += f"  ({row['window']})"
    if row.get("items_per_call", 1) > 1:
        line += f"  ({s['calls_per_s'] * row['items_per_call']:.0f} items/s"
        if row.get("db") and row.get("db_ratio") is not None:
            line += (
                f"; one COPY: {row['db']['calls_per_s'] * row['items_per_call']:.0f} items/s, "
                f"x {row['db_ratio']:.2f} (target >= {COPY_TARGET})"
            )
        line += ")"
    return line


def print_report(report: dict) -> None:
    ds = report.get("dataset", {})
    print()
    m = report["machine"]
    print(
        f"blogstore bench  {report['started']}  harness {m.get('commit', '?')}, server "
        f"{m.get('server_commit', '?')} ({m.get('server_checkout', '?')})"
    )
    m = report["machine"]
    print(
        f"machine: {m['cores']} cores, {m['python']}, {m['postgres']}; load average at start "
        f"{m['loadavg_start']}"
    )
    if ds:
        print(
            f"dataset: {ds.get('live_articles', '?')} articles, {ds.get('users', '?')} users, "
            f"{ds.get('pipelines', '?')} pipelines, {ds.get('usage_events', '?')} usage "
            f"events, competitors: {ds.get('competitors', 'not served')}"
        )
        if "load" in ds:
            ld = ds["load"]
            seconds = ld.get("rpc_seconds", ld.get("copy_seconds"))
            print(
                f"load: {ld['articles']} articles through {ld['path']}: "
                f"{ld['articles_per_s']:.0f} articles/s ({seconds} s)"
            )
        for key in ("common_query", "rare_query", "phrase_query", "deep_page"):
            if key in ds:
                print(f"{key}: {ds[key]}")
    rows = [r for r in report["results"] if not r.get("apart")]
    apart = [r for r in report["results"] if r.get("apart")]
    for title, group in (("results", rows), ("bcrypt-bound, reported apart", apart)):
        if not group:
            continue
        print(
            f"\n{title} ({report['options']['warmup']} s warm-up, "
            f"{report['options']['duration']} s measured)"
        )
        print(HEADER)
        print("-" * len(HEADER))
        for row in group:
            print(row_line(row))
    print(LEGEND)
    for line in report.get("summary", []) + report.get("notes", []):
        print(line)
    for problem in report.get("problems", []):
        print(f"PROBLEM: {problem}")


def write_json(report: dict, path: Path | None = None) -> Path:
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def _m(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict) -> str:
    """The results as a Markdown table (for BENCHMARKS.md)."""
    if report.get("metrics_compare"):
        from bench.compare import markdown as compare_markdown

        return compare_markdown(report)
    if report.get("login_flood"):
        from bench.flood import markdown as flood_markdown

        return flood_markdown(report)
    if report.get("rls_compare"):
        from bench.rls_compare import markdown as rls_markdown

        return rls_markdown(report)
    if report.get("cache_compare"):
        from bench.cache_compare import markdown as cache_markdown

        return cache_markdown(report)
    if report.get("replica_compare"):
        from bench.replica_compare import markdown as replica_markdown

        return replica_markdown(report)
    if report.get("pgbouncer_compare"):
        from bench.pgbouncer_compare import markdown as pgbouncer_markdown

        return pgbouncer_markdown(report)
    lines = [
        "| scenario | in flight | calls/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/call "
        "| PG CPU ms/call | RSS MB | other CPU % | no-op calls/s | x no-op | p95 x no-op "
        "| SQL calls/s | x SQL | p95 x SQL |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in sorted(report["results"], key=lambda r: r.get("apart", False)):
        s, n, d = row["server"], row.get("noop") or {}, row.get("db") or {}
        name = row["scenario"] + (f" (--workers {row['workers']})" if row["workers"] > 1 else "")
        if row.get("items_per_call", 1) > 1:
            name += f" ({s['calls_per_s'] * row['items_per_call']:.0f} articles/s)"
        if row.get("window"):
            name += f" ({row['window']})"
        lines.append(
            f"| {name} | {row['concurrency']} | {s['calls_per_s']:.1f} | {_m(s['p50_ms'], '.1f')} "
            f"| {_m(s['p95_ms'], '.1f')} | {_m(s['p99_ms'], '.1f')} "
            f"| {sum(s['errors'].values())} | {_m(s.get('server_cpu_ms_per_call'), '.2f')} "
            f"| {_m(s.get('db_cpu_ms_per_call'), '.2f')} | {_m(s.get('rss_peak_mb'), '.0f')} "
            f"| {_m(s.get('other_cpu_pct'), '.0f')} | {_m(n.get('calls_per_s'), '.0f')} "
            f"| {_m(row.get('noop_ratio'), '.2f')} | {_m(row.get('noop_p95_ratio'), '.1f')} "
            f"| {_m(d.get('calls_per_s'), '.1f')} | {_m(row.get('db_ratio'), '.2f')} "
            f"| {_m(row.get('db_p95_ratio'), '.2f')} |"
        )
    return "\n".join(lines)

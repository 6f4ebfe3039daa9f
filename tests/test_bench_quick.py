"""The benchmark harness runs end to end: `python -m bench run --quick` (about 1.5 minutes).

Opt-in with BLOGSTORE_BENCH_QUICK=1. It asserts that every scenario and its limits ran and
made successful calls, never how fast they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"GetArticle", "ListArticles first page", "SearchArticles common word", "RecordUsage"}

pytestmark = pytest.mark.skipif(
    os.environ.get("BLOGSTORE_BENCH_QUICK") != "1",
    reason="set BLOGSTORE_BENCH_QUICK=1 to run the benchmark smoke test",
)


def test_bench_quick_runs(tmp_path: Path) -> None:
    output = tmp_path / "quick.json"
    env = dict(os.environ)
    if env.get("BLOGSTORE_TEST_DATABASE_URL") and not env.get("BLOGSTORE_BENCH_ADMIN_URL"):
        env["BLOGSTORE_BENCH_ADMIN_URL"] = env["BLOGSTORE_TEST_DATABASE_URL"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--output", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(output.read_text())
    assert {row["scenario"] for row in report["results"]} == QUICK
    for row in report["results"]:
        for kind in ("server", "noop"):
            assert row[kind]["ok"] > 0, (row["scenario"], kind)
            assert not row[kind]["errors"], (row["scenario"], kind, row[kind]["errors"])
    assert not report["problems"]


def test_similarity_bench_quick_runs(tmp_path: Path) -> None:
    """`python -m bench.similarity --quick` (2,000 vectors of 64 dimensions, ~25 s)."""
    output = tmp_path / "similarity.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.similarity", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(output.read_text())
    assert report["index_build_seconds"] >= 0 and set(report["hnsw_all"]) == {"40", "100", "200"}
    # The 1% user's search is exact (few vectors): it finds exactly what a full scan finds.
    assert report["rpc_small_user"]["recall_at_k"] == 1.0
    assert report["rpc_big_user"]["recall_at_k"] > 0.5

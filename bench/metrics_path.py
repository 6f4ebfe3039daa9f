"""`python -m bench.metrics_path`: CPU per call of the metrics path alone (BENCHMARKS.md).

The series a GetArticle touches, with file-backed values as under `blogstore serve`, written
two ways: each value as it happens (prometheus_client's own calls: the first version) and
queued for the sampler thread to add up (what RpcMetrics and pool_wait do now).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

ROUNDS, CALLS = 7, 50_000


def main() -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    import grpc

    from server.telemetry import metrics as m

    labels = ("unary", "blogstore.v1.ArticlesService", "GetArticle")
    rpc = m.RpcMetrics("/blogstore.v1.ArticlesService/GetArticle", "unary")
    started, seconds = m.STARTED.labels(*labels), m.HANDLING.labels(*labels)
    handled, ok = m.HANDLED.labels(*labels, "OK"), grpc.StatusCode.OK

    def each_value() -> None:
        started.inc()
        handled.inc()
        seconds.observe(0.0012)
        m.POOL_WAIT.observe(0.00003)

    def queued() -> None:
        rpc.started()
        rpc.handled(ok, 0.0012)
        m.pool_wait(0.00003, False)

    def add_up() -> None:
        rpc.flush()
        m._observe_all(m.POOL_WAIT, m._drain(m._POOL_WAITS))

    results: dict[str, list[float]] = {"each value": [], "queued": [], "queued + adding up": []}
    for _ in range(ROUNDS):
        results["each value"].append(_per_call(each_value, CALLS))
        on_call = _per_call(queued, CALLS)
        results["queued"].append(on_call)
        results["queued + adding up"].append(on_call + _per_call(add_up, 1) / CALLS)
    for name, values in results.items():
        print(
            f"{name:20s} best {min(values):6.2f} us/call, median {statistics.median(values):6.2f}"
        )


def _per_call(function: Callable[[], None], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - started) / calls * 1e6


if __name__ == "__main__":
    main()

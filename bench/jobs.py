"""What the load generator and bench/dblimit.py share: the job a process runs, and the
recorder of what completes inside the measured window (one module, so neither imports the
other for it)."""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from dataclasses import dataclass


@dataclass
class Job:
    kind: str  # "grpc" or "db"
    target: str  # host:port, or a database URL for "db"
    client: str  # a key of scenarios.CLIENTS
    params: dict
    slots: int  # calls in flight in this process
    worker: int
    warmup: float
    duration: float
    key: str = ""
    channels: int = 1  # >1 only to spread connections over SO_REUSEPORT workers


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Counts what completes inside [begin, end)."""

    def __init__(self, begin: float, end: float) -> None:
        self.begin, self.end = begin, end
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.cpu = [0.0, 0.0]

    def record(self, started: float, finished: float, code: str | None, detail: str = "") -> None:
        if not self.begin <= finished < self.end:
            return
        if code is None:
            self.latencies.append((finished - started) * 1000)
        else:
            self.errors[code] += 1
            self.samples.setdefault(code, detail[:300])

    def result(self) -> dict:
        return {
            "latencies_ms": self.latencies,
            "errors": dict(self.errors),
            "error_samples": self.samples,
            "cpu_seconds": self.cpu[1] - self.cpu[0],
        }

    async def mark_cpu(self) -> None:
        await asyncio.sleep(max(0.0, self.begin - time.monotonic()))
        self.cpu[0] = cpu_seconds()
        await asyncio.sleep(max(0.0, self.end - time.monotonic()))
        self.cpu[1] = cpu_seconds()

"""The load generator: spawned processes, each a grpc.aio client with a fixed number of calls in
flight (or, for the database limit, a psycopg2 thread pool; see bench/dblimit.py).

The processes live for the whole run and take one job at a time: they set up (channel ready,
per-slot state), report ready, and start together at a time the harness gives. Calls run
back-to-back for warm-up + measured seconds; only calls that complete inside the measured
window count. Each process returns its latencies, errors by status code and its own CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import traceback
from collections.abc import Callable
from typing import Any

import grpc

from bench import dblimit
from bench.jobs import Job, Recorder
from bench.scenarios import CHANNEL_OPTIONS, CLIENTS

CALL_TIMEOUT = 120.0


def split(concurrency: int, processes: int = 2) -> list[int]:
    """In-flight calls per process: one process for concurrency 1, else an even split."""
    if concurrency == 1:
        return [1]
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


async def _grpc_job(job: Job, conn: Any) -> dict:
    client = CLIENTS[job.client](job.params, job.worker, job.slots)
    options = list(CHANNEL_OPTIONS)
    if job.channels > 1:
        options.append(("grpc.use_local_subchannel_pool", 1))
    channels = [grpc.aio.insecure_channel(job.target, options=options) for _ in range(job.channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 15)
        key = job.params[client.key_param] if client.key_param else job.key
        metadata = (("authorization", f"Bearer {key}"),) if client.metadata else None
        calls = [
            channel.unary_unary(
                client.method,
                request_serializer=client.request_cls.SerializeToString,
                response_deserializer=client.response_cls.FromString,
            )
            for channel in channels
        ]
        states = [
            await client.setup(i, channels[i % len(channels)], metadata) for i in range(job.slots)
        ]
        conn.send("ready")
        start = conn.recv()
        rec = Recorder(start + job.warmup, start + job.warmup + job.duration)
        await asyncio.sleep(max(0.0, start - time.monotonic()))

        async def slot(i: int) -> None:
            call, state = calls[i % len(calls)], states[i]
            while time.monotonic() < rec.end:
                request = client.request(state)
                started = time.monotonic()
                try:
                    response = await call(request, metadata=metadata, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as error:
                    rec.record(started, time.monotonic(), error.code().name, error.details() or "")
                    continue
                rec.record(started, time.monotonic(), None)
                client.done(state, response)

        await asyncio.gather(rec.mark_cpu(), *(slot(i) for i in range(job.slots)))
        return rec.result()
    finally:
        for channel in channels:
            await channel.close()


def _worker_main(conn: Any) -> None:
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            if job.kind == "grpc":
                result = asyncio.run(_grpc_job(job, conn))
            else:
                result = dblimit.run_job(job, conn)
        except Exception:  # noqa: BLE001 - reported to the harness, which fails the scenario
            result = {"failure": traceback.format_exc()}
        conn.send(result)


class Pool:
    """Long-lived load processes (spawned); run() hands one job to each of the first N."""

    def __init__(self, processes: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for i in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main, args=(child,), name=f"bench-load-{i}", daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def pids(self, n: int) -> list[int]:
        return [p.pid for p in self.procs[:n]]

    def run(self, jobs: list[Job], window: Callable[[float, float], dict]) -> tuple[list, dict]:
        """Run `jobs` together; `window(begin, end)` runs in the harness meanwhile."""
        conns = self.conns[: len(jobs)]
        for conn, job in zip(conns, jobs, strict=True):
            conn.send(job)
        ready = [conn.recv() for conn in conns]
        failed = [r for r in ready if r != "ready"]
        started = [c for c, r in zip(conns, ready, strict=True) if r == "ready"]
        start = time.monotonic() + 0.05
        for conn in started:
            conn.send(start)
        measured: dict = {}
        if not failed:
            warmup, duration = jobs[0].warmup, jobs[0].duration
            measured = window(start + warmup, start + warmup + duration)
        results = [conn.recv() for conn in started] + failed
        return results, measured

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)

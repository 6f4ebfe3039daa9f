"""Watch churn cannot freeze the server: 16 clients open and cancel Health/Watch streams while
health flips every second, and every probe and every unary call is answered throughout.

grpcio-health-checking's servicer deadlocked this within seconds (issue 12). The duration is
BLOGSTORE_TEST_CHURN_SECONDS (default 60).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.admin import create_admin
from server.app import create_server
from server.health import NOT_SERVING, SERVING
from tests.support import PASSWORD, make_settings, unique

CHURN_SECONDS = float(os.environ.get("BLOGSTORE_TEST_CHURN_SECONDS", "60"))
CLIENTS = 16
FLIP_SECONDS = 1.0
PROBE_DEADLINE = 2.0
CALL_DEADLINE = 5.0


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, call) -> None:
        started = time.perf_counter()
        try:
            call()
        except grpc.RpcError as error:
            with self.lock:
                self.failures.append(f"{error.code().name}: {error.details()}")
            return
        with self.lock:
            self.latencies.append(time.perf_counter() - started)

    def summary(self) -> str:
        ordered = sorted(self.latencies) or [0.0]
        p99 = ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0]
        return (
            f"{len(self.latencies)} answered, {len(self.failures)} failed, "
            f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
        )


def _channel(target: str) -> grpc.Channel:
    # A connection of its own per client (channels share subchannels by default).
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def test_watch_churn_never_blocks_probes_or_calls(database_url):
    app = create_server(make_settings(database_url, health_interval_seconds=3600))
    app.start()
    target = f"127.0.0.1:{app.port}"
    _, key = create_admin(
        database_url,
        app.settings,
        email=f"{unique()}@example.com",
        username=unique(),
        password=PASSWORD,
    )
    servicer = app.health.servicer
    servicer.watchers_per_peer = CLIENTS  # 16 clients on one host here, on 16 hosts in real life
    names = [*app.health.readiness_names, "liveness"]
    stop = threading.Event()
    probes, calls = Tally(), Tally()
    streams: Counter[str] = Counter()
    streams_lock = threading.Lock()
    flips = 0

    def flip() -> None:
        nonlocal flips
        ready = True
        while not stop.wait(FLIP_SECONDS):
            ready = not ready
            for name in app.health.readiness_names:
                servicer.set(name, SERVING if ready else NOT_SERVING)
            flips += 1

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        with _channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                request = health_pb2.HealthCheckRequest(service=rng.choice(names))
                stream = stub.Watch(request, timeout=CALL_DEADLINE)
                try:
                    next(stream)
                    if rng.random() < 0.3:
                        time.sleep(rng.uniform(0, 1.2))  # sometimes across a flip
                    outcome = "cancelled"
                except grpc.RpcError as error:
                    outcome = error.code().name
                    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                        time.sleep(0.01)
                finally:
                    stream.cancel()
                with streams_lock:
                    streams[outcome] += 1

    def probe() -> None:
        with _channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                for service in ("", "liveness"):
                    request = health_pb2.HealthCheckRequest(service=service)
                    probes.timed(lambda r=request: stub.Check(r, timeout=PROBE_DEADLINE))
                time.sleep(0.02)

    def call() -> None:
        with _channel(target) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            metadata = [("authorization", f"Bearer {key}")]
            request = users_pb2.GetCurrentUserRequest()
            while not stop.is_set():
                calls.timed(
                    lambda: stub.GetCurrentUser(request, metadata=metadata, timeout=CALL_DEADLINE)
                )
                time.sleep(0.02)

    threads = [
        threading.Thread(target=flip),
        threading.Thread(target=probe),
        threading.Thread(target=call),
        *(threading.Thread(target=churn, args=(i,)) for i in range(CLIENTS)),
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(CHURN_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CALL_DEADLINE + 5)
        hung = [t.name for t in threads if t.is_alive()]
        print(
            f"\nchurn {CHURN_SECONDS:g} s, {flips} flips; probes: {probes.summary()}; "
            f"unary calls: {calls.summary()}; watch streams: {dict(streams)}"
        )
        deadline = time.monotonic() + 10
        while servicer.open_watchers and time.monotonic() < deadline:
            time.sleep(0.05)
        open_after = servicer.open_watchers
        # A frozen server would hang stop() too: stop it aside, so the test fails, not hangs.
        stopper = threading.Thread(target=app.stop, kwargs={"grace": 0}, daemon=True)
        stopper.start()
        stopper.join(timeout=15)
    assert not hung and not stopper.is_alive(), hung
    assert probes.failures == [] and calls.failures == [], (probes.failures, calls.failures)
    assert len(probes.latencies) > CHURN_SECONDS * 10
    assert len(calls.latencies) > CHURN_SECONDS * 5
    assert streams["cancelled"] > CHURN_SECONDS * CLIENTS / 2
    assert set(streams) <= {"cancelled", "RESOURCE_EXHAUSTED"}, streams
    assert open_after == 0  # every slot came back

"""`blogstore` as a process: SIGTERM drains, the embedded database persists, --workers N."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.admin import create_admin
from tests import support
from tests.support import PASSWORD, make_settings, unique

pytestmark = pytest.mark.serial  # timing-sensitive: CI runs it alone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blogstore(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "server", *args],
        env=env,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, **kwargs},
    )


@contextlib.contextmanager
def serving(database_url: str, log_dir: Path, count: int = 2, **env: str) -> Iterator[list[int]]:
    """`count` `blogstore serve` processes on one database (through PgBouncer in that test
    mode), on ports of their own, SERVING; their output goes to files in `log_dir` (a pipe
    would fill up). Stopped, with SIGTERM, when the block ends."""
    environment = {
        "PATH": "/usr/bin:/bin",
        **support.server_env(database_url),
        "BLOGSTORE_METRICS_PORT": "0",
        "BLOGSTORE_SHUTDOWN_GRACE_SECONDS": "1",
        **env,
    }
    ports = [free_port() for _ in range(count)]
    processes = []
    try:
        for port in ports:
            with (log_dir / f"server-{port}.log").open("wb") as log:
                processes.append(blogstore("serve", "--port", str(port), env=environment,
                                           stdout=log))  # fmt: skip
        for port, process in zip(ports, processes, strict=True):
            wait_serving(port, process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def wait_serving(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError("server did not become SERVING")


def stop(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=timeout)[0].decode()
    return process.returncode, output


def current_user(port: int, key: str) -> users_pb2.GetCurrentUserResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
            users_pb2.GetCurrentUserRequest(),
            metadata=[("authorization", f"Bearer {key}")],
            timeout=10,
        )


def admin_key(database_url: str) -> str:
    """A new admin's API key, made directly in the database the process serves."""
    name = unique()
    settings = make_settings(database_url)
    return create_admin(
        database_url, settings, email=f"{name}@x.io", username=name, password=PASSWORD
    )[1]


@pytest.fixture
def server_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOGSTORE_")}
    return {
        **env,
        **support.server_env(database_url),
        "BLOGSTORE_SHUTDOWN_GRACE_SECONDS": "20",
        "BLOGSTORE_METRICS_PORT": "0",  # no fixed port in tests (tests/test_telemetry.py)
    }


def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(database_url, server_env):
    port = free_port()
    # A high bcrypt cost makes CreateUser take seconds: a call that is surely in flight.
    process = blogstore(
        "serve", "--port", str(port), env={**server_env, "BLOGSTORE_BCRYPT_ROUNDS": "15"}
    )
    try:
        wait_serving(port, process)
        key = admin_key(database_url)
        result: dict[str, object] = {}

        def slow_create() -> None:
            result["answer"] = slow_create_user(port, key)

        caller = threading.Thread(target=slow_create)
        caller.start()
        time.sleep(1.0)
        code, output = stop(process)
        caller.join()
        assert isinstance(result["answer"], users_pb2.User), result
        assert result["answer"].id
        assert code == 0, output
        assert "draining" in output
    finally:
        if process.poll() is None:
            process.kill()


def slow_create_user(port: int, key: str) -> users_pb2.User | grpc.RpcError:
    """CreateUser on a channel of its own (so that calls spread over the workers)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        name = unique()
        try:
            return (
                users_pb2_grpc.UsersServiceStub(channel)
                .CreateUser(
                    users_pb2.CreateUserRequest(
                        email=f"{name}@example.com", username=name, password=PASSWORD
                    ),
                    metadata=[("authorization", f"Bearer {key}")],
                    timeout=60,
                )
                .user
            )
        except grpc.RpcError as error:
            return error


def test_two_workers_share_the_port_and_stop_cleanly(database_url, server_env):
    """SIGTERM with calls in flight on both workers: they finish OK, a new call is refused,
    and both workers exit 0 within the grace period."""
    port = free_port()
    env = {**server_env, "BLOGSTORE_BCRYPT_ROUNDS": "13"}  # CreateUser takes a while
    process = blogstore("serve", "--port", str(port), "--workers", "2", env=env)
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in process.stdout), daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while sum("blogstore listening" in line for line in lines) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        wait_serving(port, process)
        key = admin_key(database_url)
        # Another principal probes for refusal: the first already holds its share of calls.
        probe_key = admin_key(database_url)
        for _ in range(10):
            assert current_user(port, key).user.is_admin
        calls = 8  # one connection each: both workers get some (all on one: 1 in 128)
        with ThreadPoolExecutor(calls) as pool:
            in_flight = [pool.submit(slow_create_user, port, key) for _ in range(calls)]
            time.sleep(1.0)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            refused = None
            while refused is None and time.monotonic() - signalled < 5:
                try:  # new calls are refused soon after the signal, while others drain
                    current_user(port, probe_key)
                except grpc.RpcError as error:
                    refused = error
                time.sleep(0.1)
            assert refused is not None, "".join(lines)
            # UNAVAILABLE; or CANCELLED for a call grpcio had accepted but not yet dispatched
            # when its shutdown began (grpcio cancels those).
            assert refused.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            results = [future.result() for future in in_flight]
        assert all(isinstance(user, users_pb2.User) and user.id for user in results), results
        grace = float(env["BLOGSTORE_SHUTDOWN_GRACE_SECONDS"])
        assert process.wait(timeout=60) == 0, "".join(lines)
        assert time.monotonic() - signalled < grace + 5
        reader.join(timeout=10)
        assert sum("INFO blogstore stopped" in line for line in lines) == 2, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()


def wait_for_workers(process: subprocess.Popen, count: int, timeout: float = 60) -> None:
    """Until the serve process has spawned `count` children (a fixed sleep raced a loaded
    machine: the signal came before the interpreter had started, which no code can handle)."""
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while len(parent.children()) < count:
        assert process.poll() is None and time.monotonic() < deadline, "no workers spawned"
        time.sleep(0.02)


def test_sigterm_while_workers_start_still_exits_0(server_env):
    process = blogstore("serve", "--port", str(free_port()), "--workers", "2", env=server_env)
    wait_for_workers(process, 2)  # spawned and importing: no server is up yet
    code, output = stop(process)
    assert code == 0, output


def test_embedded_database_keeps_users_across_restarts(tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BLOGSTORE_") and k != "DATABASE_URL"
    }
    env["BLOGSTORE_METRICS_PORT"] = "0"  # no fixed port in tests
    data_dir = str(tmp_path / "data")
    admin = blogstore(
        "create-admin",
        "--data-dir",
        data_dir,
        "--email",
        "root@example.com",
        "--username",
        "root",
        env=env,
    )
    output = admin.communicate(timeout=180)[0].decode()
    assert admin.returncode == 0, output
    key = output.strip().splitlines()[-1]
    assert key.startswith("bsk_")
    for _ in range(2):  # the same data directory, served twice
        port = free_port()
        process = blogstore("serve", "--data-dir", data_dir, "--port", str(port), env=env)
        try:
            wait_serving(port, process)
            assert current_user(port, key).user.username == "root"
            code, output = stop(process)
            assert code == 0, output
        finally:
            if process.poll() is None:
                process.kill()

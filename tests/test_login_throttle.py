"""Login throttling: per-login back-off held in PostgreSQL (every process sees it), unknown
logins throttled alike, a forwarded address counted only from a service, bcrypt bounded."""

from __future__ import annotations

import re
import threading
import time

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.app import create_server
from server.config import Settings
from tests.support import PASSWORD, SERVICE_KEY, make_settings, unique

pytestmark = pytest.mark.serial  # timing-sensitive: CI runs it alone

Code = grpc.StatusCode
BACKOFF = 2.0


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url, login_backoff_seconds=BACKOFF, login_max_failures_per_address=3,
        bcrypt_rounds=12,  # the production cost: timing is what these tests look at
    )  # fmt: skip


@pytest.fixture(scope="module")
def anonymous(connect) -> users_pb2_grpc.UsersServiceStub:
    return users_pb2_grpc.UsersServiceStub(connect())


def new_user(admin_users) -> str:
    name = unique()
    admin_users.CreateUser(
        users_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD)
    )
    return name


def login(stub, name: str, password: str, metadata=()) -> grpc.StatusCode:
    try:
        stub.Authenticate(
            users_pb2.AuthenticateRequest(login=name, password=password),
            metadata=metadata,
            timeout=20,
        )
        return Code.OK
    except grpc.RpcError as error:
        return error.code()


def refusal(stub, name: str, password: str, metadata=()) -> tuple[grpc.StatusCode, str, float]:
    """(code, message, RetryInfo delay in seconds) of a refused Authenticate."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.Authenticate(
            users_pb2.AuthenticateRequest(login=name, password=password),
            metadata=metadata,
            timeout=20,
        )
    status = rpc_status.from_call(caught.value)
    delays = []
    for detail in status.details if status else ():
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            delays.append(retry.retry_delay.ToNanoseconds() / 1e9)
    assert len(delays) == 1, "a back-off answer carries one RetryInfo"
    return caught.value.code(), caught.value.details(), delays[0]


def test_back_off_after_five_failures_refuses_even_the_right_password(admin_users, anonymous):
    name = new_user(admin_users)
    assert [login(anonymous, name, "wrong password") for _ in range(5)] == [
        Code.UNAUTHENTICATED
    ] * 5
    code, message, delay = refusal(anonymous, name, PASSWORD)
    assert code is Code.RESOURCE_EXHAUSTED and "too many failed logins" in message
    assert 0 < delay <= BACKOFF
    time.sleep(delay + 0.1)
    # One more failure after the back-off doubles it.
    assert login(anonymous, name, "wrong password") is Code.UNAUTHENTICATED
    code, _, delay = refusal(anonymous, name, PASSWORD)
    assert code is Code.RESOURCE_EXHAUSTED and BACKOFF < delay <= 2 * BACKOFF
    time.sleep(delay + 0.1)
    assert login(anonymous, name, PASSWORD) is Code.OK
    # A success starts the count afresh: four failures are no back-off.
    assert [login(anonymous, name, "wrong password") for _ in range(4)] == [
        Code.UNAUTHENTICATED
    ] * 4
    assert login(anonymous, name, PASSWORD) is Code.OK


def test_an_unknown_login_is_throttled_alike(admin_users, anonymous):
    known, unknown = new_user(admin_users), unique("nobody")
    for _ in range(5):
        assert login(anonymous, known, "wrong password") is Code.UNAUTHENTICATED
        assert login(anonymous, unknown, "wrong password") is Code.UNAUTHENTICATED
    known_code, known_message, _ = refusal(anonymous, known, PASSWORD)
    unknown_code, unknown_message, _ = refusal(anonymous, unknown, PASSWORD)
    assert known_code is unknown_code is Code.RESOURCE_EXHAUSTED
    assert re.sub(r"\d+", "N", known_message) == re.sub(r"\d+", "N", unknown_message)


def test_login_is_case_insensitive_for_the_throttle_too(admin_users, anonymous):
    name = new_user(admin_users)
    for variant in (name.upper(), name, f"  {name.title()} ", name.upper(), name):
        assert login(anonymous, variant, "wrong password") is Code.UNAUTHENTICATED
    assert refusal(anonymous, name, PASSWORD)[0] is Code.RESOURCE_EXHAUSTED


def test_forwarded_address_counts_only_from_a_service(admin_users, anonymous, connect, new_account):
    address = [("x-forwarded-for", "198.51.100.7, 203.0.113.9")]  # the service added the last
    user = users_pb2_grpc.UsersServiceStub(connect(new_account().token))
    for stub in (anonymous, user):  # anyone may write the header: ignored
        codes = [login(stub, unique("nobody"), "wrong password", address) for _ in range(4)]
        assert codes == [Code.UNAUTHENTICATED] * 4
    service = users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))
    codes = [login(service, unique("nobody"), "wrong password", address) for _ in range(3)]
    assert codes == [Code.UNAUTHENTICATED] * 3
    # Three failures from 203.0.113.9 (any login): that address backs off, even for a right
    # password of an account that never failed; another address does not.
    name = new_user(admin_users)
    assert refusal(service, name, PASSWORD, address)[0] is Code.RESOURCE_EXHAUSTED
    assert login(service, name, PASSWORD, [("x-forwarded-for", "203.0.113.10")]) is Code.OK
    assert login(service, name, PASSWORD) is Code.OK  # the web API's own logins
    bad = [("x-forwarded-for", "not-an-address")]
    assert login(service, name, PASSWORD, bad) is Code.INVALID_ARGUMENT


def test_the_throttle_holds_across_two_server_processes(settings, admin_users, anonymous):
    other = create_server(settings)
    other.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{other.port}")
        second = users_pb2_grpc.UsersServiceStub(channel)
        name = new_user(admin_users)
        assert [login(anonymous, name, "wrong") for _ in range(3)] == [Code.UNAUTHENTICATED] * 3
        assert [login(second, name, "wrong") for _ in range(2)] == [Code.UNAUTHENTICATED] * 2
        assert refusal(anonymous, name, PASSWORD)[0] is Code.RESOURCE_EXHAUSTED
        assert refusal(second, name, PASSWORD)[0] is Code.RESOURCE_EXHAUSTED
        channel.close()
    finally:
        other.stop(grace=0)


def test_unknown_wrong_and_deactivated_logins_take_alike(admin_users, anonymous):
    """Timing says nothing about an account: each path runs the same statements and one
    bcrypt check (fastest of three, fresh logins so no back-off interferes)."""
    deactivated = []
    for _ in range(3):
        name = new_user(admin_users)
        user = admin_users.ListUsers(users_pb2.ListUsersRequest(query=name)).users[0]
        admin_users.DeleteUser(users_pb2.DeleteUserRequest(id=user.id, etag=user.etag))
        deactivated.append(name)

    def fastest(names: list[str], password: str) -> float:
        times = []
        for name in names:
            started = time.perf_counter()
            assert login(anonymous, name, password) is Code.UNAUTHENTICATED
            times.append(time.perf_counter() - started)
        return min(times)

    unknown = fastest([unique("nobody") for _ in range(3)], PASSWORD)
    wrong = fastest([new_user(admin_users) for _ in range(3)], "wrong password")
    inactive = fastest(deactivated, PASSWORD)
    assert max(unknown, wrong, inactive) < 2 * min(unknown, wrong, inactive)


def test_a_password_check_waiting_too_long_for_the_pool_is_unavailable():
    from server.login import PasswordHasher
    from storage.errors import Unavailable

    hasher = PasswordHasher(threads=1, rounds=12)
    busy = threading.Thread(target=lambda: [hasher.hash("x" * 10, None) for _ in range(2)])
    try:
        busy.start()
        time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            hasher.verify("y" * 10, None, deadline=time.monotonic() + 0.1)
        assert time.monotonic() - started < 0.5  # refused at its deadline, not after the queue
    finally:
        busy.join()
        hasher.shutdown()

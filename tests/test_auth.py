"""Authentication, principals, isolation between users, and the audit trail."""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from sqlalchemy import text

from server.app import create_server
from server.config import Settings
from server.logs import scrub
from storage.engine import make_engine, mask_url
from tests.support import (
    PASSWORD,
    ROTATED_SERVICE_KEY,
    SERVICE_KEY,
    make_settings,
    status_of,
    unique,
)

Code = grpc.StatusCode
PUBLIC = {"blogstore.v1.UsersService/Authenticate"}


def refused_soon(call, within: float = 1.0) -> bool:
    """UNAUTHENTICATED within `within` s: a change made outside the server process reaches its
    credential cache by NOTIFY (p99 < 100 ms, tests/test_credential_cache.py)."""
    deadline = time.monotonic() + within
    while True:
        try:
            call()
        except grpc.RpcError as error:
            return error.code() is Code.UNAUTHENTICATED
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def blogstore_methods(channel: grpc.Channel) -> list[tuple[str, bool]]:
    """Every (full method name, server-streaming) the server registers, found by reflection."""
    database = ProtoReflectionDescriptorDatabase(channel)
    methods = []
    for name in database.get_services():
        if not name.startswith("blogstore."):
            continue
        descriptor = database.FindFileContainingSymbol(name)
        (service,) = [s for s in descriptor.service if f"{descriptor.package}.{s.name}" == name]
        methods += [(f"{name}/{m.name}", m.server_streaming) for m in service.method]
    return methods


def call_raw(channel: grpc.Channel, method: str, streaming: bool, metadata=()) -> grpc.StatusCode:
    try:
        if streaming:
            list(channel.unary_stream(f"/{method}")(b"", timeout=10, metadata=metadata))
        else:
            channel.unary_unary(f"/{method}")(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error.code()
    return Code.OK


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    """The production bcrypt cost: test_only_hashes_are_stored looks for it in the tables."""
    return make_settings(database_url, bcrypt_rounds=12)


@pytest.fixture(scope="module")
def plain_channel(target):
    with grpc.insecure_channel(target) as channel:
        yield channel


class TestEveryMethodNeedsCredentials:
    def test_reflection_finds_the_services(self, plain_channel):
        methods = dict(blogstore_methods(plain_channel))
        assert "blogstore.v1.UsersService/CreateUser" in methods
        assert len(methods) >= 11

    @pytest.mark.parametrize(
        "metadata",
        [
            (),
            (("authorization", "Bearer bsk_not-a-real-key-0000000000"),),
            (("authorization", "Bearer bst_not-a-real-token-000000000"),),
            (("authorization", "Bearer " + "x" * 40),),
            (("authorization", "Basic dXNlcjpwYXNz"),),
        ],
        ids=["none", "bad-api-key", "bad-token", "unknown-shape", "wrong-scheme"],
    )
    def test_without_valid_credentials_every_method_is_unauthenticated(
        self, plain_channel, metadata
    ):
        for method, streaming in blogstore_methods(plain_channel):
            code = call_raw(plain_channel, method, streaming, metadata)
            if method in PUBLIC:
                assert code is not Code.UNAUTHENTICATED, method
            else:
                assert code is Code.UNAUTHENTICATED, method

    def test_health_and_reflection_are_open(self, plain_channel):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        response = health_pb2_grpc.HealthStub(plain_channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING


class TestCredentials:
    def test_both_rotated_service_keys_work(self, connect):
        for key in (SERVICE_KEY, ROTATED_SERVICE_KEY):
            stub = users_pb2_grpc.UsersServiceStub(connect(key))
            assert stub.GetCurrentUser(users_pb2.GetCurrentUserRequest()).service_name == "crawler"

    def test_expired_access_token_is_refused_on_next_call(self, new_account, database_url):
        account = new_account()
        request = users_pb2.GetCurrentUserRequest()
        assert account.stub.GetCurrentUser(request).user.id == account.id
        engine = make_engine(database_url, pool_size=1)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE sessions SET expire_time = now() - interval '1 second' "
                    "WHERE user_id = :id"
                ),
                {"id": account.id},
            )
        engine.dispose()
        # Changed outside this process: it hears of it by NOTIFY (README, Users and credentials).
        assert refused_soon(lambda: account.stub.GetCurrentUser(request))

    def test_expired_api_key_is_refused(self, new_account, connect, database_url):
        account = new_account()
        created = account.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="short-lived"))
        keyed = users_pb2_grpc.UsersServiceStub(connect(created.api_key))
        request = users_pb2.GetCurrentUserRequest()
        assert keyed.GetCurrentUser(request).user.id == account.id
        engine = make_engine(database_url, pool_size=1)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE api_keys SET expire_time = now() - interval '1 second' WHERE id = :id"
                ),
                {"id": created.key.id},
            )
        engine.dispose()
        assert refused_soon(lambda: keyed.GetCurrentUser(request))

    def test_only_hashes_are_stored(self, new_account, database_url):
        account = new_account()
        created = account.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="stored"))
        engine = make_engine(database_url, pool_size=1)
        with engine.connect() as conn:
            dump = " ".join(
                str(row)
                for table in ("users", "sessions", "api_keys", "audit_events")
                for row in conn.execute(text(f"SELECT * FROM {table}"))
            )
        engine.dispose()
        for secret in (PASSWORD, account.token, created.api_key):
            assert secret not in dump
        assert "$2b$12$" in dump  # bcrypt, cost 12


class TestRegistration:
    def test_open_registration_creates_plain_users_only(self, database_url):
        app = create_server(make_settings(database_url, allow_registration=True))
        app.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                stub = users_pb2_grpc.UsersServiceStub(channel)
                name = unique()
                request = users_pb2.CreateUserRequest(
                    email=f"{name}@example.com", username=name, password=PASSWORD
                )
                assert not stub.CreateUser(request, timeout=10).user.is_admin
                request.is_admin, request.username, request.email = True, unique(), "x@example.com"
                assert status_of(lambda: stub.CreateUser(request, timeout=10)) is (
                    Code.PERMISSION_DENIED
                )
        finally:
            app.stop(grace=0)


class TestIsolation:
    def test_a_user_cannot_touch_another_user(self, new_account, admin_users):
        a, b = new_account(), new_account()
        b_key = b.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="b's key")).key
        calls = {
            "GetUser": lambda: a.stub.GetUser(users_pb2.GetUserRequest(id=b.id)),
            "UpdateUser": lambda: a.stub.UpdateUser(
                users_pb2.UpdateUserRequest(
                    user=users_pb2.User(id=b.id, username=unique()),
                    update_mask={"paths": ["username"]},
                )
            ),
            "DeleteUser": lambda: a.stub.DeleteUser(users_pb2.DeleteUserRequest(id=b.id)),
            "CreateApiKey": lambda: a.stub.CreateApiKey(
                users_pb2.CreateApiKeyRequest(user_id=b.id, name="sneaky")
            ),
            "ListApiKeys": lambda: a.stub.ListApiKeys(users_pb2.ListApiKeysRequest(user_id=b.id)),
            "RevokeApiKey": lambda: a.stub.RevokeApiKey(users_pb2.RevokeApiKeyRequest(id=b_key.id)),
        }
        for name, call in calls.items():
            assert status_of(call) is Code.NOT_FOUND, name
        # and nothing changed
        still = admin_users.GetUser(users_pb2.GetUserRequest(id=b.id)).user
        assert still.is_active and still.username == b.user.username
        keys = b.stub.ListApiKeys(users_pb2.ListApiKeysRequest()).api_keys
        assert [k.revoked for k in keys] == [False]


class TestAudit:
    def test_mutations_are_audited_with_actor_and_request_id(
        self, admin_users, admin_key, database_url
    ):
        request_id = f"req-{uuid.uuid4().hex}"
        name = unique()
        user = admin_users.CreateUser(
            users_pb2.CreateUserRequest(
                email=f"{name}@example.com", username=name, password=PASSWORD
            ),
            metadata=[("x-request-id", request_id)],
        ).user
        failing = f"req-{uuid.uuid4().hex}"
        with pytest.raises(grpc.RpcError):
            admin_users.CreateUser(
                users_pb2.CreateUserRequest(
                    email=f"{name}@example.com", username=unique(), password=PASSWORD
                ),
                metadata=[("x-request-id", failing)],
            )
        me = admin_users.GetCurrentUser(users_pb2.GetCurrentUserRequest()).user
        engine = make_engine(database_url, pool_size=1)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT actor_kind, actor_id, action, resource_type, resource_id, request_id "
                    "FROM audit_events WHERE request_id IN (:ok, :bad)"
                ),
                {"ok": request_id, "bad": failing},
            ).all()
        engine.dispose()
        assert [tuple(map(str, r)) for r in rows] == [
            ("admin", me.id, "user.create", "user", user.id, request_id)
        ]


class TestSecretsStayOutOfLogs:
    def test_no_password_token_or_key_in_logs(self, caplog, new_account, connect, admin_users):
        caplog.set_level(logging.DEBUG)
        account = new_account()
        key = account.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="logged?")).api_key
        users_pb2_grpc.UsersServiceStub(connect(key)).GetCurrentUser(
            users_pb2.GetCurrentUserRequest()
        )
        anonymous = users_pb2_grpc.UsersServiceStub(connect())
        with pytest.raises(grpc.RpcError):
            anonymous.Authenticate(
                users_pb2.AuthenticateRequest(login=account.user.username, password="Wr0ngSecret!")
            )
        with pytest.raises(grpc.RpcError):
            users_pb2_grpc.UsersServiceStub(connect(key + "x")).GetCurrentUser(
                users_pb2.GetCurrentUserRequest()
            )
        users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY)).GetCurrentUser(
            users_pb2.GetCurrentUserRequest()
        )
        logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
        assert "GetCurrentUser" in logged  # the access log did run
        for secret in (PASSWORD, "Wr0ngSecret!", account.token, key, SERVICE_KEY):
            assert secret not in logged

    def test_masking_helpers(self):
        url = "postgresql://blog:s3cr3t-pw@db.internal:5432/blog"
        assert "s3cr3t-pw" not in mask_url(url) and "db.internal" in mask_url(url)
        assert "s3cr3t-pw" not in scrub(f"connecting to {url}")
        assert "abcdefghijkl" not in scrub("token bsk_abcdefghijklmnop and more")
        assert "abc123" not in scrub("authorization: Bearer abc123")

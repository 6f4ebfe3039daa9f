"""User secrets through the real server: write-only, encrypted at rest (AES-256-GCM, bound to
their user and name), revealed to services only and audited, refused without keys, rotated
by `blogstore rotate-secrets`, and never in logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest
from blogstore import client
from blogstore.v1 import users_pb2, users_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from server.admin import create_admin
from server.config import ConfigError, Settings
from storage.models.user_settings import MAX_SECRETS_PER_USER
from tests import support
from tests.support import (
    PASSWORD,
    SECRET_KEY_A,
    SECRET_KEY_B,
    SERVICE_KEY,
    details_of,
    status_of,
    unique,
)

Code = grpc.StatusCode
WP_PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"  # a WordPress application password's shape
NAME = "wordpress_app_password"


def put(stub, name: str, value: str, user_id: str = "", **kw) -> users_pb2.UserSecret:
    request = users_pb2.SetUserSecretRequest(user_id=user_id, name=name, value=value)
    return stub.SetUserSecret(request, **kw).secret


def listed(stub, user_id: str = "") -> list[users_pb2.UserSecret]:
    return list(stub.ListUserSecrets(users_pb2.ListUserSecretsRequest(user_id=user_id)).secrets)


def reveal(stub, user_id: str, name: str, **kw) -> users_pb2.RevealUserSecretResponse:
    return stub.RevealUserSecret(
        users_pb2.RevealUserSecretRequest(user_id=user_id, name=name), **kw
    )


def stored(engine, user_id: str, name: str):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM user_secrets WHERE user_id = :u AND name = :n"),
            {"u": user_id, "n": name},
        ).one_or_none()


@pytest.fixture(scope="module")
def service(connect) -> users_pb2_grpc.UsersServiceStub:
    return users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))


class TestWriteOnly:
    def test_set_and_list_show_metadata_never_the_value(self, new_account):
        account = new_account()
        secret = put(account.stub, NAME, WP_PASSWORD)
        assert (secret.user_id, secret.name, secret.key_id) == (account.id, NAME, "a")
        assert secret.preview == "UVWX"
        assert secret.HasField("create_time") and secret.HasField("update_time")
        put(account.stub, "openai.api-key", "sk-" + "z" * 40)
        response = account.stub.ListUserSecrets(users_pb2.ListUserSecretsRequest())
        assert [s.name for s in response.secrets] == ["openai.api-key", NAME]  # by name
        assert WP_PASSWORD.encode() not in response.SerializeToString()
        assert "z" * 8 not in str(response)

    @pytest.mark.parametrize(("length", "preview"), [(15, ""), (16, "wxyz"), (1, "")])
    def test_a_preview_only_for_values_of_16_characters_or_more(self, new_account, length, preview):
        value = ("v" * length)[:-4] + "wxyz" if length >= 4 else "v" * length
        assert put(new_account().stub, "token", value).preview == preview

    def test_setting_again_replaces_the_value(self, new_account, service):
        account = new_account()
        first = put(account.stub, NAME, "first value of the secret")
        second = put(account.stub, NAME, "second value of the secret")
        assert second.create_time == first.create_time
        assert second.update_time.ToDatetime() >= first.update_time.ToDatetime()
        assert [s.name for s in listed(account.stub)] == [NAME]
        assert reveal(service, account.id, NAME).value == "second value of the secret"

    def test_the_database_holds_ciphertext_not_the_value(self, new_account, owner_engine):
        account = new_account()
        put(account.stub, NAME, WP_PASSWORD)
        first = stored(owner_engine, account.id, NAME)
        assert first.key_id == "a" and len(first.nonce) == 12
        ciphertext = bytes(first.ciphertext)
        assert WP_PASSWORD.encode() not in ciphertext and b"abcd" not in ciphertext
        assert len(ciphertext) == len(WP_PASSWORD.encode()) + 16  # + the GCM tag
        put(account.stub, NAME, WP_PASSWORD)  # the same value: a fresh nonce, other bytes
        again = stored(owner_engine, account.id, NAME)
        assert bytes(again.nonce) != bytes(first.nonce)
        assert bytes(again.ciphertext) != ciphertext

    def test_delete(self, new_account, service):
        account = new_account()
        put(account.stub, NAME, WP_PASSWORD)
        request = users_pb2.DeleteUserSecretRequest(name=NAME)
        assert account.stub.DeleteUserSecret(request).secret.name == NAME
        assert listed(account.stub) == []
        assert status_of(lambda: account.stub.DeleteUserSecret(request)) is Code.NOT_FOUND
        assert status_of(lambda: reveal(service, account.id, NAME)) is Code.NOT_FOUND

    @pytest.mark.parametrize(
        ("name", "value", "bad_field"),
        [
            ("", "v", "name"),
            ("Upper", "v", "name"),
            ("1st", "v", "name"),
            ("a b", "v", "name"),
            ("a" * 65, "v", "name"),
            ("ok", "", "value"),
            ("ok", "s" * (8 * 1024 + 1), "value"),
        ],
    )
    def test_bad_names_and_values_are_named(self, new_account, name, value, bad_field):
        account = new_account()
        error = details_of(lambda: put(account.stub, name, value))
        assert error.code is Code.INVALID_ARGUMENT and bad_field in error.field_violations
        assert "sss" not in error.message  # a value is described, never echoed
        assert listed(account.stub) == []

    def test_a_value_of_exactly_8_kib_is_accepted(self, new_account):
        assert put(new_account().stub, "big", "é" * 4096).name == "big"  # 8192 bytes

    def test_the_number_of_secrets_per_user_is_capped(self, new_account):
        account = new_account()
        for i in range(MAX_SECRETS_PER_USER):
            put(account.stub, f"s{i:02d}", f"value {i}")
        with pytest.raises(grpc.RpcError) as caught:
            put(account.stub, "one-too-many", "value")
        assert caught.value.code() is Code.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(caught.value)
        assert status is not None
        assert any(d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR) for d in status.details)
        assert put(account.stub, "s00", "replacing stays possible").name == "s00"
        names = [s.name for s in listed(account.stub)]
        assert len(names) == MAX_SECRETS_PER_USER and "one-too-many" not in names

    def test_list_pages_by_name(self, new_account):
        account = new_account()
        for name in ("c", "a", "b"):
            put(account.stub, name, "value")
        page = account.stub.ListUserSecrets(users_pb2.ListUserSecretsRequest(page_size=2))
        assert [s.name for s in page.secrets] == ["a", "b"] and page.next_page_token
        rest = account.stub.ListUserSecrets(
            users_pb2.ListUserSecretsRequest(page_size=2, page_token=page.next_page_token)
        )
        assert [s.name for s in rest.secrets] == ["c"] and not rest.next_page_token


class TestWhoMay:
    def test_only_services_reveal(self, new_account, admin_users, service):
        account = new_account()
        put(account.stub, NAME, WP_PASSWORD)
        assert status_of(lambda: reveal(account.stub, account.id, NAME)) is Code.PERMISSION_DENIED
        assert status_of(lambda: reveal(account.stub, "", NAME)) is Code.PERMISSION_DENIED
        assert status_of(lambda: reveal(admin_users, account.id, NAME)) is Code.PERMISSION_DENIED
        revealed = reveal(service, account.id, NAME)
        assert revealed.value == WP_PASSWORD and revealed.secret.name == NAME

    def test_a_user_cannot_touch_another_users_secrets(self, new_account, service):
        a, b = new_account(), new_account()
        put(b.stub, NAME, WP_PASSWORD)
        calls = {
            "list": lambda: listed(a.stub, b.id),
            "set": lambda: put(a.stub, NAME, "overwritten by a", user_id=b.id),
            "delete": lambda: a.stub.DeleteUserSecret(
                users_pb2.DeleteUserSecretRequest(user_id=b.id, name=NAME)
            ),
        }
        for what, call in calls.items():
            assert status_of(call) is Code.NOT_FOUND, what
        assert status_of(lambda: reveal(a.stub, b.id, NAME)) is Code.PERMISSION_DENIED
        assert reveal(service, b.id, NAME).value == WP_PASSWORD  # untouched
        assert listed(a.stub) == []

    def test_admins_and_services_manage_any_users_secrets(self, new_account, admin_users, service):
        account = new_account()
        put(admin_users, "by-admin", "value from an admin", user_id=account.id)
        put(service, "by-service", "value from a service", user_id=account.id)
        assert [s.name for s in listed(admin_users, account.id)] == ["by-admin", "by-service"]
        admin_users.DeleteUserSecret(
            users_pb2.DeleteUserSecretRequest(user_id=account.id, name="by-admin")
        )
        assert [s.name for s in listed(account.stub)] == ["by-service"]
        error = details_of(lambda: put(service, "x", "no user named"))
        assert error.code is Code.INVALID_ARGUMENT and "user_id" in error.field_violations

    def test_reveal_set_and_delete_are_audited_without_the_value(
        self, new_account, service, owner_engine
    ):
        account = new_account()
        put(account.stub, NAME, WP_PASSWORD)
        request_id = f"req-{uuid.uuid4().hex}"
        reveal(service, account.id, NAME, metadata=[("x-request-id", request_id)])
        account.stub.DeleteUserSecret(users_pb2.DeleteUserSecretRequest(name=NAME))
        events = account.stub.ListAuditEvents(
            users_pb2.ListAuditEventsRequest(resource_type="user_secret", resource_id=NAME)
        ).events
        assert [e.action for e in events] == [
            "user_secret.delete", "user_secret.reveal", "user_secret.set",
        ]  # fmt: skip
        revealed = events[1]
        assert revealed.actor_name == "crawler" and revealed.user_id == account.id
        assert revealed.request_id == request_id
        with owner_engine.connect() as connection:
            trail = connection.scalars(
                text("SELECT details::text FROM audit_events WHERE user_id = :u"),
                {"u": account.id},
            ).all()
        assert trail and not any("abcd" in row or "UVWX" in row for row in trail)


def test_a_tampered_ciphertext_does_not_open(new_account, service, owner_engine, caplog):
    """Rows swapped between names, or copied to another user, fail authentication:
    FAILED_PRECONDITION (not INTERNAL), saying so, and a warning is logged."""
    a, b = new_account(), new_account()
    put(a.stub, "first", "first secret value")
    put(a.stub, "second", "second secret value")
    put(b.stub, "first", "b's own secret value")
    with owner_engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE user_secrets AS t SET nonce = s.nonce, ciphertext = s.ciphertext "
                "FROM user_secrets AS s WHERE t.user_id = :a AND s.user_id = :a "
                "AND t.name <> s.name"
            ),
            {"a": a.id},
        )
        connection.execute(
            text(
                "UPDATE user_secrets AS t SET nonce = s.nonce, ciphertext = s.ciphertext "
                "FROM user_secrets AS s WHERE t.user_id = :b AND s.user_id = :a "
                "AND s.name = 'second' AND t.name = 'first'"
            ),
            {"a": a.id, "b": b.id},
        )
    caplog.set_level(logging.WARNING)
    for user_id, name in ((a.id, "first"), (a.id, "second"), (b.id, "first")):
        error = details_of(lambda u=user_id, n=name: reveal(service, u, n))
        assert error.code is Code.FAILED_PRECONDITION, (name, error.code)
        assert "cannot be decrypted" in error.message and "secret value" not in error.message
    assert "cannot be read (tampered" in caplog.text
    assert not any(e.action == "user_secret.reveal" for e in a.stub.ListAuditEvents(
        users_pb2.ListAuditEventsRequest(resource_type="user_secret")).events)  # fmt: skip


def test_the_value_never_appears_in_the_log(new_account, service, caplog):
    caplog.set_level(logging.DEBUG)
    account = new_account()
    value = f"never-log-me-{uuid.uuid4().hex}"
    put(account.stub, NAME, value)
    assert reveal(service, account.id, NAME).value == value
    with pytest.raises(grpc.RpcError):
        put(account.stub, "Bad Name", value)
    access = [r for r in caplog.records if r.name == "blogstore.access"]
    assert any("SetUserSecret" in r.getMessage() for r in access)  # the log was captured
    assert any("RevealUserSecret" in r.getMessage() for r in access)
    assert value not in caplog.text
    assert value[-12:] not in caplog.text


def test_without_keys_secret_calls_fail_but_settings_work(database_url, started):
    app = support.start_app(started, database_url, secret_keys="")
    _, admin_key = create_admin(
        database_url, app.settings, email=f"{unique()}@example.com", username=unique(),
        password=PASSWORD,
    )  # fmt: skip
    target = f"127.0.0.1:{app.port}"
    with client.connect(target, admin_key) as admin, client.connect(target, SERVICE_KEY) as svc:
        users = users_pb2_grpc.UsersServiceStub(admin)
        me = users.GetCurrentUser(users_pb2.GetCurrentUserRequest()).user
        calls = {
            "set": lambda: put(users, NAME, WP_PASSWORD),
            "list": lambda: listed(users),
            "delete": lambda: users.DeleteUserSecret(users_pb2.DeleteUserSecretRequest(name=NAME)),
            "reveal": lambda: reveal(users_pb2_grpc.UsersServiceStub(svc), me.id, NAME),
        }
        for what, call in calls.items():
            error = details_of(call)
            assert error.code is Code.FAILED_PRECONDITION, what
            assert "BLOGSTORE_SECRET_KEYS" in error.message, what
        settings = users.GetUserSettings(users_pb2.GetUserSettingsRequest()).settings
        assert settings.user_id == me.id


@pytest.mark.parametrize(
    "raw",
    ["a", "a:short", f"{SECRET_KEY_A},{SECRET_KEY_A}", "bad id:" + SECRET_KEY_A.split(":")[1],
     "a:" + SECRET_KEY_A.split(":")[1][:-3] + "!!="],
)  # fmt: skip
def test_bad_keys_stop_the_start_naming_the_setting(raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BLOGSTORE_SECRET_KEYS": raw})
    message = str(caught.value)
    assert message.startswith("BLOGSTORE_SECRET_KEYS: ")
    assert SECRET_KEY_A.split(":")[1][:10] not in message  # never the key


def test_serve_refuses_bad_keys_with_exit_code_2():
    env = {"BLOGSTORE_SECRET_KEYS": "k1:" + "A" * 40, "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "configuration error: BLOGSTORE_SECRET_KEYS: entry 1 (key id 'k1')" in result.stderr
    assert "A" * 40 not in result.stderr


# -- rotation ------------------------------------------------------------------------------
@pytest.fixture
def rotation_db(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A database of its own: rotation re-encrypts every secret in it."""
    url = support.create_database(pg_admin_url, template=template_database)
    yield url
    support.drop_database(pg_admin_url, url)


def rotate_secrets(url: str, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "BLOGSTORE_SECRET_KEYS": keys}
    return subprocess.run(
        [sys.executable, "-m", "server", "rotate-secrets", *args], env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_rotation_to_a_new_key(rotation_db, started):
    url = rotation_db
    old = support.start_app(started, url, secret_keys=SECRET_KEY_A)
    _, admin_key = create_admin(
        url, old.settings, email=f"{unique()}@example.com", username=unique(), password=PASSWORD
    )
    values = {f"s{i}": f"secret value number {i}" for i in range(5)}
    with client.connect(f"127.0.0.1:{old.port}", admin_key) as channel:
        users = users_pb2_grpc.UsersServiceStub(channel)
        me = users.GetCurrentUser(users_pb2.GetCurrentUserRequest()).user.id
        for name, value in values.items():
            assert put(users, name, value).key_id == "a"
    old.stop(grace=0)
    started.remove(old)

    def reveal_all(keys: str) -> dict[str, str]:
        app = support.start_app(started, url, secret_keys=keys)
        try:
            with client.connect(f"127.0.0.1:{app.port}", SERVICE_KEY) as channel:
                service = users_pb2_grpc.UsersServiceStub(channel)
                return {n: reveal(service, me, n).value for n in values}
        finally:
            app.stop(grace=0)
            started.remove(app)

    both = f"{SECRET_KEY_B},{SECRET_KEY_A}"
    assert reveal_all(both) == values  # the old key still reads, after the new one
    result = rotate_secrets(url, both, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 5 secrets under key 'b' in 3 batches; 0 unreadable" in result.stdout
    assert "secrets per key now: 'b': 5" in result.stdout
    again = rotate_secrets(url, both)
    assert again.returncode == 0 and "re-encrypted 0 secrets" in again.stdout  # idempotent
    engine = support.admin_engine(url)
    with engine.connect() as connection:
        keys = connection.scalars(text("SELECT DISTINCT key_id FROM user_secrets")).all()
        audited = connection.scalar(
            text("SELECT count(*) FROM audit_events WHERE action = 'user_secret.rotate'")
        )
    engine.dispose()
    assert keys == ["b"] and audited == 2
    assert reveal_all(SECRET_KEY_B) == values  # the old key can go
    app = support.start_app(started, url, secret_keys=SECRET_KEY_A)  # the old key alone
    with client.connect(f"127.0.0.1:{app.port}", SERVICE_KEY) as channel:
        error = details_of(lambda: reveal(users_pb2_grpc.UsersServiceStub(channel), me, "s0"))
    assert error.code is Code.FAILED_PRECONDITION
    assert "key 'b'" in error.message and "BLOGSTORE_SECRET_KEYS" in error.message


def test_rotate_secrets_without_keys_exits_2(rotation_db):
    result = rotate_secrets(rotation_db, "")
    assert result.returncode == 2 and "BLOGSTORE_SECRET_KEYS" in result.stderr


def test_row_level_security_keeps_a_users_transactions_to_its_own_rows(new_account, database_url):
    """Below the owner checks: an unscoped SELECT as a user principal sees only its rows."""
    from sqlalchemy import select

    from storage.actors import Actor, ActorKind, Caller
    from storage.engine import make_engine
    from storage.models import UserSecret, UserSettings
    from storage.uow import Database

    a, b = new_account(), new_account()
    for account in (a, b):
        put(account.stub, NAME, WP_PASSWORD)
        account.stub.UpdateUserSettings(
            users_pb2.UpdateUserSettingsRequest(
                settings=users_pb2.UserSettings(usage_alert_percent=1),
                update_mask={"paths": ["usage_alert_percent"]},
            )
        )
    db = Database(make_engine(database_url, pool_size=1), role=Settings().db_role)
    try:
        caller = Caller(Actor(ActorKind.USER, uuid.UUID(a.id)))
        for model in (UserSecret, UserSettings):
            owners = db.run(caller, lambda tx, m=model: tx.session.scalars(select(m.user_id)).all())
            assert {str(o) for o in owners} == {a.id}, model
    finally:
        db.dispose()


def test_the_value_never_appears_in_traces(database_url, new_account, caplog):
    """Tracing on (RPC and SQL spans, slow-query log at 1 ms): no span or log line holds it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from server.app import create_server
    from server.telemetry import Telemetry

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.DEBUG)
    app = create_server(
        support.make_settings(database_url),
        Telemetry(slow_query_ms=1, tracer_provider=provider),
    )
    app.start()
    try:
        account = new_account()
        value = f"traced-never-{uuid.uuid4().hex}"
        target = f"127.0.0.1:{app.port}"
        with (
            client.connect(target, account.token) as user,
            client.connect(target, SERVICE_KEY) as svc,
        ):
            put(users_pb2_grpc.UsersServiceStub(user), NAME, value)
            revealed = reveal(users_pb2_grpc.UsersServiceStub(svc), account.id, NAME)
            assert revealed.value == value
    finally:
        app.stop(grace=0)
        provider.shutdown()
    finished = spans.get_finished_spans()
    assert any("RevealUserSecret" in s.name for s in finished)
    dumped = "".join(s.to_json() for s in finished)
    assert value not in dumped and value not in caplog.text


def test_rotation_passes_an_unreadable_secret_and_says_so(rotation_db):
    """A row that does not decrypt is listed (exit 1) and left under its key; the rest move."""
    from storage.secrets import parse_keyring

    keyring = parse_keyring(SECRET_KEY_A)
    assert keyring is not None
    engine = support.admin_engine(rotation_db)
    with engine.begin() as connection:
        user_id = connection.scalar(
            text(
                "INSERT INTO users (email, username, password_hash) "
                "VALUES ('r@example.com', 'rotator', 'x') RETURNING id"
            )
        )
        for name in ("good", "other", "tampered"):
            sealed = keyring.seal(user_id, name, f"value of {name}")
            ciphertext = sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])
            connection.execute(
                text(
                    "INSERT INTO user_secrets (user_id, name, key_id, nonce, ciphertext) "
                    "VALUES (:u, :n, :k, :nonce, :c)"
                ),
                {"u": user_id, "n": name, "k": sealed.key_id, "nonce": sealed.nonce,
                 "c": ciphertext if name == "tampered" else sealed.ciphertext},
            )  # fmt: skip
    result = rotate_secrets(rotation_db, f"{SECRET_KEY_B},{SECRET_KEY_A}", "--batch-size", "1")
    assert result.returncode == 1
    assert "re-encrypted 2 secrets under key 'b' in 4 batches; 1 unreadable" in result.stdout
    assert f"unreadable: user {user_id} secret 'tampered' (tampered)" in result.stderr
    with engine.connect() as connection:
        keys = dict(connection.execute(text("SELECT name, key_id FROM user_secrets")).all())
    engine.dispose()
    assert keys == {"good": "b", "other": "b", "tampered": "a"}

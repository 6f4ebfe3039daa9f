"""UsersService through the real server and generated stubs: every RPC and its failure codes."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import common_pb2, users_pb2, users_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.support import PASSWORD, SERVICE_KEY, details_of, status_of, unique

Code = grpc.StatusCode


def create_request(name: str | None = None, **fields) -> users_pb2.CreateUserRequest:
    name = name or unique()
    values = {"email": f"{name}@example.com", "username": name, "password": PASSWORD, **fields}
    return users_pb2.CreateUserRequest(**values)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


class TestCreateUser:
    def test_creates_user_without_exposing_password(self, admin_users):
        user = admin_users.CreateUser(create_request()).user
        assert uuid.UUID(user.id)
        assert user.is_active and not user.is_admin
        assert user.etag and user.create_time.seconds > 0
        assert PASSWORD not in str(user)

    @pytest.mark.parametrize(
        ("fields", "bad_field"),
        [
            ({"email": "not-an-email"}, "email"),
            ({"email": ""}, "email"),
            ({"username": "a b"}, "username"),
            ({"username": "ab"}, "username"),
            ({"password": "short"}, "password"),
            ({"password": "é" * 37}, "password"),  # 74 bytes of UTF-8, 37 characters
            ({"request_id": "not-a-uuid"}, "request_id"),
            ({"username": "nul\x00byte"}, "username"),
        ],
    )
    def test_invalid_fields_are_named(self, admin_users, fields, bad_field):
        error = details_of(lambda: admin_users.CreateUser(create_request(**fields)))
        assert error.code is Code.INVALID_ARGUMENT
        assert error.reason == "INVALID_ARGUMENT"
        assert bad_field in error.field_violations

    def test_password_of_exactly_72_bytes_is_accepted(self, admin_users):
        assert admin_users.CreateUser(create_request(password="x" * 72)).user.id

    def test_email_is_unique_case_insensitively(self, admin_users):
        name = unique()
        admin_users.CreateUser(create_request(name))
        clash = create_request(unique(), email=f"{name.upper()}@EXAMPLE.com")
        error = details_of(lambda: admin_users.CreateUser(clash))
        assert error.code is Code.ALREADY_EXISTS and "email" in error.message

    def test_username_is_unique(self, admin_users):
        name = unique()
        admin_users.CreateUser(create_request(name))
        clash = create_request(name, email=f"other-{name}@example.com")
        error = details_of(lambda: admin_users.CreateUser(clash))
        assert error.code is Code.ALREADY_EXISTS and "username" in error.message

    def test_retry_with_same_request_id_gives_one_user(self, admin_users):
        request = create_request(request_id=str(uuid.uuid4()))
        first = admin_users.CreateUser(request).user
        again = admin_users.CreateUser(request).user
        assert again.id == first.id

    def test_concurrent_retries_with_same_request_id_give_one_user(self, admin_users):
        request = create_request(request_id=str(uuid.uuid4()))
        with ThreadPoolExecutor(6) as pool:
            users = list(pool.map(lambda _: admin_users.CreateUser(request).user, range(6)))
        assert len({u.id for u in users}) == 1

    def test_request_id_reused_for_another_user_is_invalid(self, admin_users):
        request_id = str(uuid.uuid4())
        admin_users.CreateUser(create_request(request_id=request_id))
        other = create_request(request_id=request_id)
        assert status_of(lambda: admin_users.CreateUser(other)) is Code.INVALID_ARGUMENT

    def test_user_principal_cannot_create_users(self, new_account):
        account = new_account()
        assert status_of(lambda: account.stub.CreateUser(create_request())) is (
            Code.PERMISSION_DENIED
        )

    def test_only_admins_create_admins(self, admin_users, connect):
        service = users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))
        request = create_request(is_admin=True)
        assert status_of(lambda: service.CreateUser(request)) is Code.PERMISSION_DENIED
        assert admin_users.CreateUser(request).user.is_admin

    def test_anonymous_registration_is_closed_by_default(self, connect):
        anonymous = users_pb2_grpc.UsersServiceStub(connect())
        assert status_of(lambda: anonymous.CreateUser(create_request())) is Code.UNAUTHENTICATED


class TestGetUser:
    def test_user_sees_itself(self, new_account):
        account = new_account()
        got = account.stub.GetUser(users_pb2.GetUserRequest(id=account.id)).user
        assert got.email == account.user.email

    def test_unknown_and_malformed_ids(self, admin_users):
        missing = users_pb2.GetUserRequest(id=str(uuid.uuid4()))
        assert status_of(lambda: admin_users.GetUser(missing)) is Code.NOT_FOUND
        bad = users_pb2.GetUserRequest(id="nope")
        assert status_of(lambda: admin_users.GetUser(bad)) is Code.INVALID_ARGUMENT

    def test_current_user_for_each_principal_kind(self, new_account, admin_users, connect):
        account = new_account()
        me = account.stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())
        assert me.kind == common_pb2.PRINCIPAL_KIND_USER and me.user.id == account.id
        admin = admin_users.GetCurrentUser(users_pb2.GetCurrentUserRequest())
        assert admin.kind == common_pb2.PRINCIPAL_KIND_ADMIN and admin.user.is_admin
        service = users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))
        svc = service.GetCurrentUser(users_pb2.GetCurrentUserRequest())
        assert svc.kind == common_pb2.PRINCIPAL_KIND_SERVICE
        assert svc.service_name == "crawler" and not svc.HasField("user")


class TestListUsers:
    def test_pages_through_matching_users_once_each(self, admin_users):
        prefix = unique("lister")
        created = {
            admin_users.CreateUser(create_request(f"{prefix}-{i}")).user.id for i in range(5)
        }
        seen, token = [], ""
        while True:
            page = admin_users.ListUsers(
                users_pb2.ListUsersRequest(page_size=2, page_token=token, query=prefix)
            )
            seen += [u.id for u in page.users]
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == 5 and set(seen) == created

    def test_filters_by_is_active(self, admin_users):
        prefix = unique("active")
        user = admin_users.CreateUser(create_request(f"{prefix}-x")).user
        admin_users.DeleteUser(users_pb2.DeleteUserRequest(id=user.id))
        active = admin_users.ListUsers(users_pb2.ListUsersRequest(query=prefix, is_active=True))
        inactive = admin_users.ListUsers(users_pb2.ListUsersRequest(query=prefix, is_active=False))
        assert [u.id for u in active.users] == [] and [u.id for u in inactive.users] == [user.id]

    def test_query_is_a_literal_prefix(self, admin_users):
        admin_users.CreateUser(create_request(unique("pct")))
        page = admin_users.ListUsers(users_pb2.ListUsersRequest(query="%"))
        assert list(page.users) == []

    def test_token_bound_to_filters_and_tamper_proof(self, admin_users):
        prefix = unique("tok")
        for i in range(3):
            admin_users.CreateUser(create_request(f"{prefix}-{i}"))
        token = admin_users.ListUsers(
            users_pb2.ListUsersRequest(page_size=1, query=prefix)
        ).next_page_token
        other = users_pb2.ListUsersRequest(page_size=1, query="x", page_token=token)
        assert status_of(lambda: admin_users.ListUsers(other)) is Code.INVALID_ARGUMENT
        forged = users_pb2.ListUsersRequest(page_size=1, query=prefix, page_token=token[:-2] + "AA")
        assert status_of(lambda: admin_users.ListUsers(forged)) is Code.INVALID_ARGUMENT

    def test_page_size_rules(self, admin_users):
        negative = users_pb2.ListUsersRequest(page_size=-1)
        assert status_of(lambda: admin_users.ListUsers(negative)) is Code.INVALID_ARGUMENT
        assert admin_users.ListUsers(users_pb2.ListUsersRequest(page_size=5000)).users

    def test_users_cannot_list(self, new_account):
        account = new_account()
        request = users_pb2.ListUsersRequest()
        assert status_of(lambda: account.stub.ListUsers(request)) is Code.PERMISSION_DENIED


class TestUpdateUser:
    def test_updates_masked_fields_and_changes_etag(self, new_account):
        account = new_account()
        new_name = unique("renamed")
        user = users_pb2.User(id=account.id, username=new_name, email="ignored@example.com")
        updated = account.stub.UpdateUser(
            users_pb2.UpdateUserRequest(user=user, update_mask=mask("username"))
        ).user
        assert updated.username == new_name
        assert updated.email == account.user.email
        assert updated.etag != account.user.etag

    def test_stale_etag_is_aborted(self, new_account):
        account = new_account()
        first = users_pb2.User(id=account.id, username=unique(), etag=account.user.etag)
        account.stub.UpdateUser(
            users_pb2.UpdateUserRequest(user=first, update_mask=mask("username"))
        )
        stale = users_pb2.User(id=account.id, username=unique(), etag=account.user.etag)
        error = details_of(
            lambda: account.stub.UpdateUser(
                users_pb2.UpdateUserRequest(user=stale, update_mask=mask("username"))
            )
        )
        assert error.code is Code.ABORTED and error.reason == "CONFLICT"

    def test_concurrent_updates_with_one_etag_one_wins(self, admin_users, new_account):
        account = new_account()

        def rename(i: int) -> grpc.StatusCode:
            user = users_pb2.User(id=account.id, username=unique(f"r{i}"), etag=account.user.etag)
            request = users_pb2.UpdateUserRequest(user=user, update_mask=mask("username"))
            try:
                admin_users.UpdateUser(request)
                return Code.OK
            except grpc.RpcError as error:
                return error.code()

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(rename, range(4)))
        assert codes.count(Code.OK) == 1 and codes.count(Code.ABORTED) == 3

    @pytest.mark.parametrize("path", ["id", "create_time", "etag", "password", "nonsense"])
    def test_output_only_or_unknown_paths_are_invalid(self, new_account, path):
        account = new_account()
        request = users_pb2.UpdateUserRequest(
            user=users_pb2.User(id=account.id), update_mask=mask(path)
        )
        error = details_of(lambda: account.stub.UpdateUser(request))
        assert error.code is Code.INVALID_ARGUMENT and "update_mask" in error.field_violations

    def test_missing_mask_is_invalid(self, new_account):
        account = new_account()
        request = users_pb2.UpdateUserRequest(user=users_pb2.User(id=account.id))
        assert status_of(lambda: account.stub.UpdateUser(request)) is Code.INVALID_ARGUMENT

    def test_user_cannot_make_itself_admin_or_reactivate(self, new_account):
        account = new_account()
        for path in ("is_admin", "is_active"):
            request = users_pb2.UpdateUserRequest(
                user=users_pb2.User(id=account.id, is_admin=True, is_active=True),
                update_mask=mask(path),
            )
            assert status_of(lambda r=request: account.stub.UpdateUser(r)) is (
                Code.PERMISSION_DENIED
            )

    def test_email_clash_is_already_exists(self, new_account):
        a, b = new_account(), new_account()
        request = users_pb2.UpdateUserRequest(
            user=users_pb2.User(id=a.id, email=b.user.email.upper()), update_mask=mask("email")
        )
        assert status_of(lambda: a.stub.UpdateUser(request)) is Code.ALREADY_EXISTS


class TestDeleteUser:
    def test_deactivation_refuses_the_users_credentials(self, admin_users, new_account):
        account = new_account()
        deleted = admin_users.DeleteUser(users_pb2.DeleteUserRequest(id=account.id)).user
        assert not deleted.is_active
        me = users_pb2.GetCurrentUserRequest()
        assert status_of(lambda: account.stub.GetCurrentUser(me)) is Code.UNAUTHENTICATED
        login = users_pb2.AuthenticateRequest(login=account.user.username, password=PASSWORD)
        assert status_of(lambda: admin_users.Authenticate(login)) is Code.UNAUTHENTICATED
        # still there for admins
        assert admin_users.GetUser(users_pb2.GetUserRequest(id=account.id)).user.id == account.id

    def test_purge_is_admin_only_and_removes_the_user(self, admin_users, new_account, connect):
        account = new_account()
        purge = users_pb2.DeleteUserRequest(id=account.id, purge=True)
        assert status_of(lambda: account.stub.DeleteUser(purge)) is Code.PERMISSION_DENIED
        service = users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))
        assert status_of(lambda: service.DeleteUser(purge)) is Code.PERMISSION_DENIED
        admin_users.DeleteUser(purge)
        get = users_pb2.GetUserRequest(id=account.id)
        assert status_of(lambda: admin_users.GetUser(get)) is Code.NOT_FOUND

    def test_stale_etag_on_delete_is_aborted(self, admin_users, new_account):
        account = new_account()
        admin_users.UpdateUser(
            users_pb2.UpdateUserRequest(
                user=users_pb2.User(id=account.id, username=unique()), update_mask=mask("username")
            )
        )
        request = users_pb2.DeleteUserRequest(id=account.id, etag=account.user.etag)
        assert status_of(lambda: admin_users.DeleteUser(request)) is Code.ABORTED


class TestPasswordsAndSessions:
    def test_authenticate_by_email_or_username(self, admin_users, connect):
        name = unique()
        admin_users.CreateUser(create_request(name))
        anonymous = users_pb2_grpc.UsersServiceStub(connect())
        for login in (name, f"{name.upper()}@example.com"):
            response = anonymous.Authenticate(
                users_pb2.AuthenticateRequest(login=login, password=PASSWORD)
            )
            assert response.access_token.startswith("bst_") and len(response.access_token) > 40
            assert response.user.username == name and response.user.HasField("last_login_time")
            assert response.expire_time.ToDatetime(dt.UTC) > dt.datetime.now(dt.UTC)

    def test_wrong_password_and_unknown_user_look_alike(self, admin_users, connect):
        name = unique()
        admin_users.CreateUser(create_request(name))
        anonymous = users_pb2_grpc.UsersServiceStub(connect())
        wrong = details_of(
            lambda: anonymous.Authenticate(
                users_pb2.AuthenticateRequest(login=name, password="wrong password")
            )
        )
        unknown = details_of(
            lambda: anonymous.Authenticate(
                users_pb2.AuthenticateRequest(login=unique(), password="wrong password")
            )
        )
        assert wrong.code is unknown.code is Code.UNAUTHENTICATED
        assert (wrong.message, wrong.reason) == (unknown.message, unknown.reason)

    def test_change_password_revokes_tokens(self, new_account, connect):
        account = new_account()
        response = account.stub.ChangePassword(
            users_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password="a new password!"
            )
        )
        assert response.revoked_token_count >= 1
        me = users_pb2.GetCurrentUserRequest()
        assert status_of(lambda: account.stub.GetCurrentUser(me)) is Code.UNAUTHENTICATED
        anonymous = users_pb2_grpc.UsersServiceStub(connect())
        old = users_pb2.AuthenticateRequest(login=account.user.username, password=PASSWORD)
        assert status_of(lambda: anonymous.Authenticate(old)) is Code.UNAUTHENTICATED
        new = users_pb2.AuthenticateRequest(login=account.user.username, password="a new password!")
        assert anonymous.Authenticate(new).access_token

    def test_change_password_needs_the_current_one(self, new_account):
        account = new_account()
        for current in ("", "not the password"):
            request = users_pb2.ChangePasswordRequest(
                current_password=current, new_password="whatever123"
            )
            error = details_of(lambda r=request: account.stub.ChangePassword(r))
            assert error.code is Code.INVALID_ARGUMENT
            assert "current_password" in error.field_violations

    def test_admin_resets_another_users_password(self, admin_users, new_account):
        account = new_account()
        response = admin_users.ChangePassword(
            users_pb2.ChangePasswordRequest(user_id=account.id, new_password="reset by admin")
        )
        assert response.user.id == account.id

    def test_user_cannot_change_another_users_password(self, new_account):
        a, b = new_account(), new_account()
        request = users_pb2.ChangePasswordRequest(
            user_id=b.id, current_password=PASSWORD, new_password="hijacked!!"
        )
        assert status_of(lambda: a.stub.ChangePassword(request)) is Code.NOT_FOUND


class TestApiKeys:
    def test_create_list_use_and_revoke(self, new_account, connect):
        account = new_account()
        created = account.stub.CreateApiKey(
            users_pb2.CreateApiKeyRequest(name="wordpress sync", service="wordpress")
        )
        assert created.api_key.startswith(created.key.prefix) and len(created.api_key) > 40
        keyed = users_pb2_grpc.UsersServiceStub(connect(created.api_key))
        for _ in range(2):
            me = keyed.GetCurrentUser(users_pb2.GetCurrentUserRequest())
            assert me.user.id == account.id
        listed = account.stub.ListApiKeys(users_pb2.ListApiKeysRequest()).api_keys
        (key,) = [k for k in listed if k.id == created.key.id]
        assert key.usage_count == 2 and key.HasField("last_used_time")
        assert created.api_key not in str(listed)
        revoked = account.stub.RevokeApiKey(users_pb2.RevokeApiKeyRequest(id=key.id)).key
        assert revoked.revoked
        me = users_pb2.GetCurrentUserRequest()
        assert status_of(lambda: keyed.GetCurrentUser(me)) is Code.UNAUTHENTICATED
        assert account.stub.ListApiKeys(users_pb2.ListApiKeysRequest()).api_keys == []
        shown = account.stub.ListApiKeys(users_pb2.ListApiKeysRequest(show_revoked=True))
        assert [k.id for k in shown.api_keys] == [key.id]

    def test_expiry_must_lie_ahead(self, new_account):
        account = new_account()
        past = timestamp_pb2.Timestamp(seconds=1)
        request = users_pb2.CreateApiKeyRequest(name="old", expire_time=past)
        assert status_of(lambda: account.stub.CreateApiKey(request)) is Code.INVALID_ARGUMENT

    def test_name_required(self, new_account):
        account = new_account()
        request = users_pb2.CreateApiKeyRequest(name="  ")
        assert status_of(lambda: account.stub.CreateApiKey(request)) is Code.INVALID_ARGUMENT

    def test_service_principal_must_name_the_user(self, connect, new_account):
        account = new_account()
        service = users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))
        request = users_pb2.CreateApiKeyRequest(name="k")
        assert status_of(lambda: service.CreateApiKey(request)) is Code.INVALID_ARGUMENT
        created = service.CreateApiKey(users_pb2.CreateApiKeyRequest(user_id=account.id, name="k"))
        assert created.key.user_id == account.id

    def test_revoke_unknown_key(self, new_account):
        account = new_account()
        request = users_pb2.RevokeApiKeyRequest(id=str(uuid.uuid4()))
        assert status_of(lambda: account.stub.RevokeApiKey(request)) is Code.NOT_FOUND

    def test_list_pages(self, new_account):
        account = new_account()
        ids = {
            account.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name=f"k{i}")).key.id
            for i in range(3)
        }
        first = account.stub.ListApiKeys(users_pb2.ListApiKeysRequest(page_size=2))
        second = account.stub.ListApiKeys(
            users_pb2.ListApiKeysRequest(page_size=2, page_token=first.next_page_token)
        )
        assert not second.next_page_token
        assert {k.id for k in [*first.api_keys, *second.api_keys]} == ids


def test_create_admin_calls_the_service_without_a_grpc_context(settings, connect):
    """The CLI's create-admin runs UsersServicer's code directly as the system principal,
    without planting that principal in the calling thread's context for later code."""
    from server.admin import create_admin
    from server.context import current_caller
    from storage.actors import ANONYMOUS

    name = unique()
    user_id, key = create_admin(
        settings.database_url.get_secret_value(), settings,
        email=f"{name}@example.com", username=name, password=PASSWORD,
    )  # fmt: skip
    assert current_caller().actor == ANONYMOUS
    user = (
        users_pb2_grpc.UsersServiceStub(connect(key))
        .GetUser(users_pb2.GetUserRequest(id=user_id))
        .user
    )
    assert (user.username, user.is_admin) == (name, True)
    with pytest.raises(Exception, match="email"):
        create_admin(
            settings.database_url.get_secret_value(), settings,
            email="not-an-email", username=unique(), password=PASSWORD,
        )  # fmt: skip

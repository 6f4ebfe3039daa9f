"""UsersService: accounts, password login, access tokens, API keys, settings and secrets."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import grpc
from blogstore.v1 import common_pb2, users_pb2, users_pb2_grpc

from server.context import current_caller
from server.convert.users import (
    SETTINGS_MUTABLE,
    SETTINGS_OUTPUT_ONLY,
    api_key_fields,
    api_key_to_proto,
    check_email,
    check_password,
    check_username,
    preview,
    secret_name,
    secret_to_proto,
    secret_value,
    settings_changes,
    settings_to_proto,
    user_to_proto,
)
from server.login import PasswordHasher, forwarded_address
from server.paging import PageTokens, filter_key
from server.protoconv import datetime_or_none, etag_version, timestamp
from server.services.audit import audit_event_to_proto, audit_filters
from server.validation import (
    Violations,
    mask_paths,
    optional_uuid,
    owner_id,
    page_size,
    parse_uuid,
)
from storage import credentials
from storage.actors import Actor, ActorKind, Caller
from storage.errors import (
    InvalidArgument,
    PermissionDenied,
    SecretsNotConfigured,
    Unauthenticated,
)
from storage.models import ApiKey, User
from storage.models.user_settings import MAX_SECRETS_PER_USER
from storage.secrets import Keyring
from storage.throttle import LoginThrottle, login_keys
from storage.uow import Database

_KIND = {
    ActorKind.USER: common_pb2.PRINCIPAL_KIND_USER,
    ActorKind.ADMIN: common_pb2.PRINCIPAL_KIND_ADMIN,
    ActorKind.SERVICE: common_pb2.PRINCIPAL_KIND_SERVICE,
}


def require_privileged(actor: Actor, what: str) -> None:
    if not actor.is_privileged:
        raise PermissionDenied(f"only admin or service principals may {what}")


class UsersServicer(users_pb2_grpc.UsersServiceServicer):
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokens,
        *,
        passwords: PasswordHasher,
        throttle: LoginThrottle,
        token_ttl_seconds: int,
        keyring: Keyring | None = None,
        credentials_changed: Callable[[uuid.UUID], None] = lambda user_id: None,
        flush_usage: Callable[[], None] = lambda: None,
        articles_purged: Callable[[uuid.UUID], None] = lambda user_id: None,
    ) -> None:
        """`keyring`: the keys of user secrets (None: secret RPCs are FAILED_PRECONDITION).
        `credentials_changed(user_id)`: after a commit that may stop a credential resolving
        (this process's credential cache forgets the user's at once; others hear the NOTIFY).
        `flush_usage`: write the batched usage counts, so this process reads exact ones.
        `articles_purged(user_id)`: after a purge (this process's article cache forgets the
        user's articles at once; others hear the NOTIFY)."""
        self.keyring = keyring
        self.articles_purged = articles_purged
        self.credentials_changed = credentials_changed
        self.flush_usage = flush_usage
        self.db = db
        self.page_tokens = page_tokens
        self.passwords = passwords
        self.throttle = throttle
        self.token_ttl = dt.timedelta(seconds=token_ttl_seconds)

    def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.CreateUserResponse:
        user = self.create_user(
            current_caller(),
            email=request.email,
            username=request.username,
            password=request.password,
            is_admin=request.is_admin,
            request_id=request.request_id,
        )
        return users_pb2.CreateUserResponse(user=user_to_proto(user))

    def create_user(
        self,
        caller: Caller,
        *,
        email: str,
        username: str,
        password: str,
        is_admin: bool,
        request_id: str = "",
    ) -> User:
        """CreateUser without a gRPC call around it (the CLI's create-admin uses it too)."""
        actor = caller.actor
        if actor.kind is ActorKind.USER:
            raise PermissionDenied("only admin or service principals may create users")
        if is_admin and actor.kind not in (ActorKind.ADMIN, ActorKind.SYSTEM):
            raise PermissionDenied("only admins may create admins")
        v = Violations()
        email = check_email(v, "email", email)
        username = check_username(v, "username", username)
        password = check_password(v, "password", password)
        v.raise_if_any()
        request_uuid = optional_uuid("request_id", request_id)
        password_hash = self.passwords.hash(password, caller.deadline)

        def create(tx):
            user, created = tx.users.create(
                email=email,
                username=username,
                password_hash=password_hash,
                is_admin=is_admin,
                request_id=request_uuid,
            )
            if created:
                tx.audit("user.create", "user", user.id, is_admin=user.is_admin)
            return user

        return self.db.run(caller, create)

    def GetUser(
        self, request: users_pb2.GetUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.GetUserResponse:
        caller = current_caller()
        user_id = parse_uuid("id", request.id)
        user = self.db.read(caller, lambda tx: tx.users.get(user_id))
        return users_pb2.GetUserResponse(user=user_to_proto(user))

    def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> users_pb2.ListUsersResponse:
        caller = current_caller()
        require_privileged(caller.actor, "list users")
        limit = page_size(request.page_size)
        is_active = request.is_active if request.HasField("is_active") else None
        query = request.query.strip()
        filters = {"is_active": is_active, "query": query}
        after = self.page_tokens.decode(request.page_token, filters)
        page = self.db.read(
            caller,
            lambda tx: tx.users.list(after=after, limit=limit, is_active=is_active, query=query),
        )
        return users_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, filters),
        )

    def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.UpdateUserResponse:
        caller = current_caller()
        actor = caller.actor
        user_id = parse_uuid("user.id", request.user.id)
        paths = mask_paths(
            request.update_mask,
            mutable=("email", "username", "is_active", "is_admin"),
            output_only=("id", "create_time", "update_time", "last_login_time", "etag"),
        )
        if "is_admin" in paths and actor.kind not in (ActorKind.ADMIN, ActorKind.SYSTEM):
            raise PermissionDenied("only admins may change is_admin")
        if "is_active" in paths:
            require_privileged(actor, "change is_active")
        v = Violations()
        changes: dict[str, object] = {}
        if "email" in paths:
            changes["email"] = check_email(v, "user.email", request.user.email)
        if "username" in paths:
            changes["username"] = check_username(v, "user.username", request.user.username)
        v.raise_if_any()
        for flag in ("is_active", "is_admin"):
            if flag in paths:
                changes[flag] = getattr(request.user, flag)
        version = etag_version("user.etag", request.user.etag)

        def update(tx):
            user = tx.users.update(tx.users.get(user_id), version, changes)
            tx.audit("user.update", "user", user.id, fields=sorted(paths))
            return user

        user = self.db.run(caller, update)
        self.credentials_changed(user.id)  # is_active or is_admin may have changed
        return users_pb2.UpdateUserResponse(user=user_to_proto(user))

    def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.DeleteUserResponse:
        caller = current_caller()
        user_id = parse_uuid("id", request.id)
        version = etag_version("etag", request.etag)
        if request.purge and caller.actor.kind not in (ActorKind.ADMIN, ActorKind.SYSTEM):
            raise PermissionDenied("only admins may purge users")

        def delete(tx):
            user = tx.users.get(user_id)
            if request.purge:
                tx.users.purge(user)
                tx.audit("user.purge", "user", user_id)
                return user
            user = tx.users.update(user, version, {"is_active": False})
            tx.credentials.revoke_access_tokens(user.id)
            tx.audit("user.deactivate", "user", user_id)
            return user

        try:
            user = self.db.run(caller, delete)
        finally:
            if request.purge:
                self.articles_purged(user_id)
        self.credentials_changed(user_id)
        return users_pb2.DeleteUserResponse(user=user_to_proto(user))

    def ChangePassword(
        self, request: users_pb2.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> users_pb2.ChangePasswordResponse:
        caller = current_caller()
        actor = caller.actor
        user_id = owner_id("user_id", request.user_id, actor)
        v = Violations()
        new_password = check_password(v, "new_password", request.new_password)
        resetting_other = actor.is_privileged and user_id != actor.user_id
        v.check(
            resetting_other or bool(request.current_password), "current_password", "is required"
        )
        v.raise_if_any()
        user = self.db.run(caller, lambda tx: tx.users.get(user_id))
        if not resetting_other and not self._password_matches(
            request.current_password, user, caller
        ):
            raise InvalidArgument({"current_password": "is not the current password"})
        new_hash = self.passwords.hash(new_password, caller.deadline)

        def change(tx):
            changed = tx.users.update(
                tx.users.get(user_id), user.version, {"password_hash": new_hash}
            )
            revoked = tx.credentials.revoke_access_tokens(user_id)
            tx.audit("user.change_password", "user", user_id, revoked_tokens=revoked)
            return changed, revoked

        changed, revoked = self.db.run(caller, change)
        self.credentials_changed(user_id)
        return users_pb2.ChangePasswordResponse(
            user=user_to_proto(changed), revoked_token_count=revoked
        )

    def Authenticate(
        self, request: users_pb2.AuthenticateRequest, context: grpc.ServicerContext
    ) -> users_pb2.AuthenticateResponse:
        caller = current_caller()
        v = Violations()
        v.check(bool(request.login.strip()), "login", "is required")
        v.check(bool(request.password), "password", "is required")
        v.check(
            len(request.password.encode()) <= credentials.MAX_PASSWORD_BYTES,
            "password",
            f"must be at most {credentials.MAX_PASSWORD_BYTES} bytes of UTF-8",
        )
        v.raise_if_any()
        login_name = request.login.strip()
        address = forwarded_address(context.invocation_metadata(), caller.actor)
        keys = login_keys(login_name, address)
        self.throttle.attempt(caller, keys)  # while backing off: refused, no bcrypt
        user = self.db.run(caller, lambda tx: tx.users.find_by_login(login_name))
        # Unknown users cost one bcrypt check too, so timing does not tell them apart.
        if not self._password_matches(request.password, user, caller) or not user.is_active:
            raise Unauthenticated("invalid login or password", reason="bad_login")
        token = credentials.new_secret(credentials.ACCESS_TOKEN_PREFIX)
        expire_time = dt.datetime.now(dt.UTC) + self.token_ttl
        rehash = credentials.hash_rounds(user.password_hash) < self.passwords.rounds
        new_hash = self.passwords.hash(request.password, caller.deadline) if rehash else None

        def login(tx):
            session = tx.credentials.create_access_token(
                user.id, credentials.digest(token), expire_time
            )
            fresh = tx.users.record_login(user.id, new_hash)
            self.throttle.succeeded(tx, keys)
            tx.audit("user.authenticate", "session", session.id, user_id=str(user.id))
            return fresh

        fresh = self.db.run(caller, login)
        return users_pb2.AuthenticateResponse(
            access_token=token, expire_time=timestamp(expire_time), user=user_to_proto(fresh)
        )

    def GetCurrentUser(
        self, request: users_pb2.GetCurrentUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.GetCurrentUserResponse:
        caller = current_caller()
        actor = caller.actor
        response = users_pb2.GetCurrentUserResponse(kind=_KIND[actor.kind])
        if actor.kind is ActorKind.SERVICE:
            response.service_name = actor.name
            return response
        user = self.db.run(caller, lambda tx: tx.users.get(actor.user_id))
        response.user.CopyFrom(user_to_proto(user))
        return response

    def CreateApiKey(
        self, request: users_pb2.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> users_pb2.CreateApiKeyResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        secret, key = self.create_api_key(
            caller,
            user_id=user_id,
            name=request.name,
            service=request.service,
            expire_time=datetime_or_none(request, "expire_time"),
        )
        return users_pb2.CreateApiKeyResponse(api_key=secret, key=api_key_to_proto(key))

    def create_api_key(
        self,
        caller: Caller,
        *,
        user_id: uuid.UUID,
        name: str,
        service: str,
        expire_time: dt.datetime | None = None,
    ) -> tuple[str, ApiKey]:
        """CreateApiKey without a gRPC call around it: (the secret, shown once; the key)."""
        name, service = api_key_fields(name, service, expire_time)
        secret = credentials.new_secret(credentials.API_KEY_PREFIX)

        def create(tx):
            tx.users.get(user_id)  # scope: another user's id is NOT_FOUND
            key = tx.credentials.create_api_key(
                user_id=user_id,
                name=name,
                service=service,
                prefix=secret[: credentials.API_KEY_DISPLAY_LENGTH],
                key_hash=credentials.digest(secret),
                expire_time=expire_time,
            )
            tx.audit("api_key.create", "api_key", key.id, user_id=str(user_id), name=name)
            return key

        return secret, self.db.run(caller, create)

    def ListApiKeys(
        self, request: users_pb2.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> users_pb2.ListApiKeysResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        limit = page_size(request.page_size)
        filters = {"user_id": str(user_id), "show_revoked": request.show_revoked}
        after = self.page_tokens.decode(request.page_token, filters)

        def list_keys(tx):
            tx.users.get(user_id)
            return tx.credentials.list_api_keys(
                user_id, after=after, limit=limit, show_revoked=request.show_revoked
            )

        self.flush_usage()
        page = self.db.run(caller, list_keys)
        return users_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, filters),
        )

    def RevokeApiKey(
        self, request: users_pb2.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> users_pb2.RevokeApiKeyResponse:
        caller = current_caller()
        key_id = parse_uuid("id", request.id)

        def revoke(tx):
            key = tx.credentials.revoke_api_key(tx.credentials.get_api_key(key_id))
            tx.audit("api_key.revoke", "api_key", key.id, user_id=str(key.user_id))
            return key

        key = self.db.run(caller, revoke)
        self.credentials_changed(key.user_id)
        return users_pb2.RevokeApiKeyResponse(key=api_key_to_proto(key))

    def ListAuditEvents(
        self, request: users_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> users_pb2.ListAuditEventsResponse:
        caller = current_caller()
        filters = audit_filters(request, caller.actor)
        limit = page_size(request.page_size)
        key = filter_key(filters)
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.read(
            caller, lambda tx: tx.audit_events.list(filters, after=after, limit=limit)
        )
        return users_pb2.ListAuditEventsResponse(
            events=[audit_event_to_proto(e) for e in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def GetUserSettings(
        self, request: users_pb2.GetUserSettingsRequest, context: grpc.ServicerContext
    ) -> users_pb2.GetUserSettingsResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)

        def get(tx):
            tx.users.require_visible({user_id})
            return tx.user_settings.get_stored(user_id)

        row = self.db.run(caller, get)
        return users_pb2.GetUserSettingsResponse(settings=settings_to_proto(user_id, row))

    def UpdateUserSettings(
        self, request: users_pb2.UpdateUserSettingsRequest, context: grpc.ServicerContext
    ) -> users_pb2.UpdateUserSettingsResponse:
        caller = current_caller()
        user_id = owner_id("settings.user_id", request.settings.user_id, caller.actor)
        paths = mask_paths(
            request.update_mask, mutable=SETTINGS_MUTABLE, output_only=SETTINGS_OUTPUT_ONLY
        )
        changes = settings_changes(request.settings, paths)
        version = etag_version("settings.etag", request.settings.etag)

        def update(tx):
            tx.users.require_visible({user_id})
            row = tx.user_settings.update(user_id, version, changes)
            tx.audit("user_settings.update", "user_settings", user_id, user_id=str(user_id),
                     fields=sorted(paths))  # fmt: skip
            return row

        row = self.db.run(caller, update)
        return users_pb2.UpdateUserSettingsResponse(settings=settings_to_proto(user_id, row))

    def SetUserSecret(
        self, request: users_pb2.SetUserSecretRequest, context: grpc.ServicerContext
    ) -> users_pb2.SetUserSecretResponse:
        caller = current_caller()
        keyring = self._keyring()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        name = secret_name("name", request.name)
        value = secret_value("value", request.value)
        sealed = keyring.seal(user_id, name, value)

        def put(tx):
            tx.users.require_visible({user_id})
            row, created = tx.user_secrets.put(
                user_id, name, sealed, preview(value), max_per_user=MAX_SECRETS_PER_USER
            )
            tx.audit("user_secret.set", "user_secret", name, user_id=str(user_id),
                     key_id=sealed.key_id, created=created)  # fmt: skip
            return row

        return users_pb2.SetUserSecretResponse(secret=secret_to_proto(self.db.run(caller, put)))

    def ListUserSecrets(
        self, request: users_pb2.ListUserSecretsRequest, context: grpc.ServicerContext
    ) -> users_pb2.ListUserSecretsResponse:
        caller = current_caller()
        self._keyring()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        limit = page_size(request.page_size)
        filters = {"user_id": str(user_id)}
        after = self.page_tokens.decode(request.page_token, filters)

        def list_secrets(tx):
            tx.users.require_visible({user_id})
            return tx.user_secrets.list(user_id, after=after[0] if after else None, limit=limit)

        page = self.db.run(caller, list_secrets)
        return users_pb2.ListUserSecretsResponse(
            secrets=[secret_to_proto(s) for s in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, filters),
        )

    def DeleteUserSecret(
        self, request: users_pb2.DeleteUserSecretRequest, context: grpc.ServicerContext
    ) -> users_pb2.DeleteUserSecretResponse:
        caller = current_caller()
        self._keyring()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        name = secret_name("name", request.name)

        def delete(tx):
            tx.users.require_visible({user_id})
            row = tx.user_secrets.delete(user_id, name)
            tx.audit("user_secret.delete", "user_secret", name, user_id=str(user_id))
            return row

        return users_pb2.DeleteUserSecretResponse(
            secret=secret_to_proto(self.db.run(caller, delete))
        )

    def RevealUserSecret(
        self, request: users_pb2.RevealUserSecretRequest, context: grpc.ServicerContext
    ) -> users_pb2.RevealUserSecretResponse:
        caller = current_caller()
        if caller.actor.kind is not ActorKind.SERVICE:
            raise PermissionDenied("only service principals may read a secret's value")
        keyring = self._keyring()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        name = secret_name("name", request.name)

        def reveal(tx):  # opened inside: a value that does not open is not audited as read
            tx.users.require_visible({user_id})
            row = tx.user_secrets.get_named(user_id, name)
            value = keyring.open_stored(row)
            tx.audit("user_secret.reveal", "user_secret", name, user_id=str(user_id),
                     key_id=row.key_id)  # fmt: skip
            return row, value

        row, value = self.db.run(caller, reveal)
        return users_pb2.RevealUserSecretResponse(secret=secret_to_proto(row), value=value)

    def _keyring(self) -> Keyring:
        if self.keyring is None:
            raise SecretsNotConfigured()
        return self.keyring

    def _password_matches(self, password: str, user: User | None, caller: Caller) -> bool:
        return self.passwords.verify(
            password, user.password_hash if user else None, caller.deadline
        )

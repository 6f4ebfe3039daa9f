"""Bearer credentials -> principal (user, admin or service)."""

from __future__ import annotations

import hmac
import uuid

from server.config import ServiceKey
from server.credential_cache import CredentialCache, Resolved, UsageCounts
from storage.actors import ANONYMOUS, SYSTEM, Actor, ActorKind, Caller
from storage.credentials import ACCESS_TOKEN_PREFIX, API_KEY_PREFIX, digest
from storage.errors import DomainError, Unauthenticated
from storage.models import AccessToken, ApiKey
from storage.queries import resolve_credential
from storage.uow import Database

_MODELS = {API_KEY_PREFIX: ApiKey, ACCESS_TOKEN_PREFIX: AccessToken}
_MAX_TOKEN_LENGTH = 256


def bearer_token(metadata: object) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="malformed")
    return None


class Authenticator:
    """`cache`: live credentials kept in memory (None: every call reads the database).
    `usage`: where each use is counted (None: uses are not counted, as in unit set-ups)."""

    def __init__(
        self,
        db: Database,
        service_keys: tuple[ServiceKey, ...],
        *,
        cache: CredentialCache | None = None,
        usage: UsageCounts | None = None,
    ) -> None:
        self.db = db
        self.service_keys = service_keys
        self.cache = cache
        self.usage = usage

    def credentials_changed(self, user_id: uuid.UUID) -> None:
        """After a commit that revoked, expired or disabled credentials of `user_id`."""
        if self.cache is not None:
            self.cache.evict_user(user_id)

    def resolve(self, token: str, request_id: str, deadline: float | None) -> Actor:
        """The principal behind `token`; unknown, expired, revoked, inactive: Unauthenticated.

        Every failure has the same message; its `reason` only feeds the metrics.
        """
        if len(token) > _MAX_TOKEN_LENGTH:
            raise Unauthenticated(reason="malformed")
        token_digest = digest(token)
        service = self._service_key(token_digest)
        if service is not None:
            return Actor(ActorKind.SERVICE, name=service.name)
        model = _MODELS.get(token[:4])
        if model is None:
            raise Unauthenticated(reason="unknown")
        holder, generation = (None, -1) if self.cache is None else self.cache.get(token_digest)
        if holder is None:
            holder = self._lookup(model, token_digest, request_id, deadline)
            if self.cache is not None:
                self.cache.put(token_digest, holder, generation)
        if not hmac.compare_digest(holder.secret_hash, token_digest):
            raise Unauthenticated(reason="unknown")
        if self.usage is not None:
            self.usage.add(holder)
        kind = ActorKind.ADMIN if holder.is_admin else ActorKind.USER
        return Actor(kind, holder.user_id)

    def _lookup(
        self, model: type, token_digest: bytes, request_id: str, deadline: float | None
    ) -> Resolved:
        caller = Caller(SYSTEM, request_id, deadline)
        row = resolve_credential(self.db, caller, model, token_digest)
        if row is None:
            raise Unauthenticated(reason=self._failure_reason(caller, model, token_digest))
        return Resolved(
            model.__tablename__, row.id, bytes(row.secret_hash), row.user_id, row.is_admin,
            row.expire_time,
        )  # fmt: skip

    def service_or_anonymous(self, metadata: object) -> Actor:
        """For public methods: a service key's principal, else anonymous (nothing refused)."""
        try:
            token = bearer_token(metadata)
        except Unauthenticated:
            return ANONYMOUS
        if token is None or len(token) > _MAX_TOKEN_LENGTH:
            return ANONYMOUS
        service = self._service_key(digest(token))
        return ANONYMOUS if service is None else Actor(ActorKind.SERVICE, name=service.name)

    def _failure_reason(self, caller: Caller, model: type, token_digest: bytes) -> str:
        """Unknown, revoked, expired or inactive_user: one more lookup, on failures only."""
        try:
            return self.db.run(
                caller, lambda tx: tx.credentials.failure_reason(model, token_digest)
            )
        except DomainError:
            return "unknown"

    def _service_key(self, token_digest: bytes) -> ServiceKey | None:
        """Compare against every configured key in constant time, without an early exit."""
        found = None
        for key in self.service_keys:
            if hmac.compare_digest(key.digest, token_digest):
                found = key
        return found

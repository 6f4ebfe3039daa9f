"""Operator actions run from the CLI through the same service code the API uses, called
directly (no gRPC call or context; the caller is the system principal)."""

from __future__ import annotations

from server.config import Settings
from server.login import PasswordHasher, login_throttle
from server.paging import PageTokens
from server.services.users import UsersServicer
from storage.actors import SYSTEM, Caller
from storage.engine import make_engine
from storage.uow import Database


def create_admin(
    database_url: str, settings: Settings, *, email: str, username: str, password: str
) -> tuple[str, str]:
    """Create an admin user and an API key for it; returns (user id, API key secret).

    Going through UsersServicer.create_user and .create_api_key keeps one set of validation
    and audit rules; the actor is the system principal, which may create admins.
    """
    db = Database(make_engine(database_url, pool_size=1), statement_timeout_ms=30_000)
    servicer = UsersServicer(
        db,
        PageTokens(settings.page_token_secret.get_secret_value()),
        passwords=PasswordHasher(1, settings.bcrypt_rounds),
        throttle=login_throttle(db, settings),
        token_ttl_seconds=settings.access_token_ttl_seconds,
    )
    caller = Caller(SYSTEM)
    try:
        user = servicer.create_user(
            caller, email=email, username=username, password=password, is_admin=True
        )
        secret, _key = servicer.create_api_key(
            caller, user_id=user.id, name="create-admin", service="cli"
        )
    finally:
        servicer.passwords.shutdown()
        db.dispose()
    return str(user.id), secret

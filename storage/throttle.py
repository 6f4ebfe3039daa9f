"""Login back-off, shared by every process and replica (table login_throttles, migration 0011).

Keys are SHA-256 digests of the normalized login (an unknown login is a key like any other,
so back-off says nothing about whether an account exists) and, where a trusted caller
forwards one, of the end user's address. Each attempt is one statement
(blogstore_login_attempt), which refuses while any key backs off and otherwise counts the
attempt as a failure before the password is checked; a success then takes it back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import text

from storage.actors import Caller
from storage.errors import TooManyAttempts
from storage.uow import Database, Prepared, Tx

_ATTEMPT = Prepared(
    name="blogstore_login_attempt",
    body="SELECT blogstore_login_attempt($1, $2, $3, $4) AS wait",
    params=("keys", "thresholds", "backoff", "backoff_max"),
    types=("bytea[]", "integer[]", "double precision", "double precision"),
    # A crash may forget the last few counts (never a success's reset): not worth a WAL
    # flush on every guess of a flood.
    durable=False,
)
# The login starts afresh; the address gets back the failure its attempt counted up front
# (a success from an office's shared address is not a failure of that address).
_SUCCEEDED = text(
    "WITH reset AS (DELETE FROM login_throttles WHERE key = :account) "
    "UPDATE login_throttles SET failures = failures - 1, blocked_until = CASE "
    "WHEN failures - 1 < :threshold THEN NULL ELSE blocked_until END "
    "WHERE key = :address AND failures > 0"
)


@dataclass(frozen=True)
class LoginKeys:
    account: bytes
    address: bytes | None = None


def login_keys(login: str, address: str | None) -> LoginKeys:
    """`login` as Authenticate matches it (case-insensitive); `address` already normalized."""
    account = hashlib.sha256(b"login\0" + login.strip().lower().encode()).digest()
    if address is None:
        return LoginKeys(account)
    return LoginKeys(account, hashlib.sha256(b"address\0" + address.encode()).digest())


@dataclass(frozen=True)
class LoginThrottle:
    db: Database
    max_failures: int
    max_failures_per_address: int
    backoff_seconds: float
    backoff_max_seconds: float

    def attempt(self, caller: Caller, keys: LoginKeys) -> None:
        """Count this attempt; TooManyAttempts (and nothing counted) while backing off."""
        pairs = [(keys.account, self.max_failures)]
        if keys.address is not None:
            pairs.append((keys.address, self.max_failures_per_address))
        (row,) = self.db.query(
            caller,
            _ATTEMPT,
            {
                "keys": [key for key, _ in pairs],
                "thresholds": [threshold for _, threshold in pairs],
                "backoff": self.backoff_seconds,
                "backoff_max": self.backoff_max_seconds,
            },
        )
        if row.wait > 0:
            raise TooManyAttempts(row.wait)

    def succeeded(self, tx: Tx, keys: LoginKeys) -> None:
        """In the login's own transaction: reset the login, give the address its count back."""
        tx.session.execute(
            _SUCCEEDED,
            {
                "account": keys.account,
                "address": keys.address,
                "threshold": self.max_failures_per_address,
            },
        )

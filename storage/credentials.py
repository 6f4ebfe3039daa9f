"""Password hashing and bearer-token secrets.

Passwords are kept only as bcrypt hashes; tokens and API keys only as SHA-256 digests. A token's
prefix says what it is, so authentication needs one indexed lookup, not a guess.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

import bcrypt

ACCESS_TOKEN_PREFIX = "bst_"
API_KEY_PREFIX = "bsk_"
API_KEY_DISPLAY_LENGTH = 12  # "bsk_" + 8 characters, safe to show and log
_TOKEN_BYTES = 32  # 256 random bits
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer: refuse it instead


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, password_hash: str | None, rounds: int) -> bool:
    """Check a password; with no hash, burn the same bcrypt time so misses look like hits."""
    candidate = password.encode()[:MAX_PASSWORD_BYTES]
    if password_hash is None:
        bcrypt.checkpw(candidate, _dummy_hash(rounds))
        return False
    return bcrypt.checkpw(candidate, password_hash.encode())


def hash_rounds(password_hash: str) -> int:
    """The cost a bcrypt hash was made with ($2b$12$...)."""
    return int(password_hash.split("$")[2])


@lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(_TOKEN_BYTES)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()

"""Encryption of user secrets at rest: AES-256-GCM under keys from BLOGSTORE_SECRET_KEYS.

Each value is sealed with a random 96-bit nonce and associated data naming its owner and name,
so a ciphertext copied to another user's row, or another name, does not open. The key id is
stored beside each value: new values use the keyring's first key, reads pick the key by its
id, and `blogstore rotate-secrets` re-seals everything not under the first key. Plaintext
lives only in memory here and in the RevealUserSecret response; it is never passed to SQL,
logs or errors.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.errors import SecretUnreadable

log = logging.getLogger(__name__)

SETTING = "BLOGSTORE_SECRET_KEYS"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's natural nonce size; random per write
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_CONTEXT = b"blogstore.user_secret.v1\x00"  # domain separation for the associated data


@dataclass(frozen=True)
class SecretKey:
    key_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class Sealed:
    """A value as stored: the id of its key, its nonce, and ciphertext with the GCM tag."""

    key_id: str
    nonce: bytes
    ciphertext: bytes = field(repr=False)


def associated_data(user_id: uuid.UUID, name: str) -> bytes:
    """What a ciphertext is bound to: its owner (16 bytes) and its name."""
    return _CONTEXT + user_id.bytes + name.encode()


class Keyring:
    """The configured keys, the first one current (new values are sealed with it)."""

    def __init__(self, keys: Sequence[SecretKey]) -> None:
        # Imported here: Settings parses the keys' format without loading cryptography.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.current_id = keys[0].key_id
        self._ciphers = {k.key_id: AESGCM(k.key) for k in keys}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, user_id: uuid.UUID, name: str, value: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.current_id]
        ciphertext = cipher.encrypt(nonce, value.encode(), associated_data(user_id, name))
        return Sealed(self.current_id, nonce, ciphertext)

    def open(self, user_id: uuid.UUID, name: str, sealed: Sealed) -> str:
        """The plaintext; SecretUnreadable if its key is not configured or it does not
        authenticate (altered, or copied from another user or name)."""
        from cryptography.exceptions import InvalidTag

        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SecretUnreadable(
                f"secret {name!r} is encrypted under key {sealed.key_id!r}, which {SETTING} "
                "does not hold: add that key back (after the current one)",
                cause="unknown_key",
            )
        try:
            plain = cipher.decrypt(sealed.nonce, sealed.ciphertext, associated_data(user_id, name))
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                f"secret {name!r} cannot be decrypted: its stored value was altered or belongs "
                "to another user or name; set it again",
                cause="tampered",
            ) from None
        return plain.decode()

    def open_stored(self, row: Any) -> str:
        """open() for a stored row (user_id, name, key_id, nonce, ciphertext); a row that
        does not open is logged as the security event it may be (names, never values)."""
        sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
        try:
            return self.open(row.user_id, row.name, sealed)
        except SecretUnreadable as error:
            log.warning("secret %r of user %s cannot be read (%s, key %r)",
                        row.name, row.user_id, error.cause, row.key_id)  # fmt: skip
            raise


def parse_keyring(raw: str) -> Keyring | None:
    """`key_id:key,key_id:key` (each key 32 bytes, URL-safe base64); "" -> None (no keys)."""
    keys = parse_keys(raw)
    return Keyring(keys) if keys else None


def parse_keys(raw: str) -> list[SecretKey]:
    """The keys of `raw`, first the current one; ValueError names the entry and its key id,
    never the key."""
    keys: list[SecretKey] = []
    entries = [part.strip() for part in raw.split(",")]
    if not any(entries):
        return []
    for number, entry in enumerate(entries, 1):
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not KEY_ID.match(key_id):
            raise ValueError(
                f"entry {number}: entries are key_id:key, the key id 1-32 letters, digits, "
                "'_', '.' or '-'"
            )
        if any(k.key_id == key_id for k in keys):
            raise ValueError(f"entry {number}: key id {key_id!r} appears twice")
        key = _decode_key(encoded)
        if key is None:
            raise ValueError(
                f"entry {number} (key id {key_id!r}): the key must be {KEY_BYTES} random bytes "
                "in URL-safe base64 (python -c 'import base64,os;"
                "print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
            )
        keys.append(SecretKey(key_id, key))
    return keys


def _decode_key(encoded: str) -> bytes | None:
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None

"""Opaque page tokens: an HMAC-signed keyset cursor bound to the request's filters."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Any

from storage.errors import InvalidArgument

_SIGNATURE_BYTES = 16


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, cursor: tuple[Any, ...] | None, filters: Mapping[str, Any]) -> str:
        """'' at the end of the results, else a token for the page after `cursor`."""
        if cursor is None:
            return ""
        payload = json.dumps(
            {"c": [_tag(v) for v in cursor], "f": _fingerprint(filters)}, separators=(",", ":")
        ).encode()
        return base64.urlsafe_b64encode(payload + self._sign(payload)).decode().rstrip("=")

    def decode(self, token: str, filters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The cursor in `token`; a forged token or one from other filters is INVALID_ARGUMENT."""
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload, signature = raw[:-_SIGNATURE_BYTES], raw[-_SIGNATURE_BYTES:]
            if not hmac.compare_digest(signature, self._sign(payload)):
                raise ValueError("bad signature")
            body = json.loads(payload)
            cursor = tuple(_untag(v) for v in body["c"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument({"page_token": "is not a valid page token"}) from None
        if body.get("f") != _fingerprint(filters):
            raise InvalidArgument({"page_token": "was issued for a request with other filters"})
        return cursor

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def filter_key(filters: object, **extra: Any) -> dict[str, Any]:
    """A filters dataclass (plus extras such as order_by) as the values a token is bound to."""
    values = {k: str(v) if v is not None else None for k, v in vars(filters).items()}
    return {**values, **extra}


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _tag(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return dt.datetime.fromisoformat(value["t"])
        return uuid.UUID(value["u"])
    return value

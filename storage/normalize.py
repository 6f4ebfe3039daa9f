"""Canonical forms of competitor domains and article URLs, so duplicates compare equal.

Both functions raise InvalidArgument({field: reason}) for input they cannot make sense of; the
servicer passes the request field's name as `field`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

from storage.errors import InvalidArgument

MAX_DOMAIN_LENGTH = 253
MAX_URL_LENGTH = 2048
_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left as they are in a path: RFC 3986 pchar plus "/" and "%" (existing escapes).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_TRACKING_PARAMETERS = frozenset({"fbclid", "gclid"})


def normalize_domain(value: str, *, field: str = "domain") -> str:
    """A competitor's domain: lower-case IDNA host, no scheme, path, port 80/443 or `www.`.

    Other ports are kept (`example.com:8080`). Accepts a bare host or an http(s) URL.
    """
    text = value.strip()
    if not text:
        raise InvalidArgument({field: "is required"})
    parts = _split(text if "://" in text else f"//{text}", field, "a domain name")
    if parts.scheme and parts.scheme.lower() not in _SCHEMES:
        raise InvalidArgument({field: "must be a domain name or an http(s) URL"})
    host = _host(parts, field)
    if host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    port = _port(parts, field)
    if port is not None and port not in _DEFAULT_PORTS.values():
        return f"{host}:{port}"
    return host


def normalize_url(value: str, *, field: str = "url") -> str:
    """An article URL with fragment, tracking parameters, default port and noise removed.

    The scheme and host are lower-cased (host in IDNA), dot segments resolved, percent escapes
    made canonical, the query sorted by name, and a trailing slash dropped except for `/`.
    """
    text = value.strip()
    if not text:
        raise InvalidArgument({field: "is required"})
    if len(text) > MAX_URL_LENGTH:
        raise InvalidArgument({field: f"must be at most {MAX_URL_LENGTH} characters"})
    parts = _split(text, field, "an absolute http(s) URL")
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidArgument({field: "must be an absolute http(s) URL"})
    host = _host(parts, field)
    port = _port(parts, field)
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _path(parts.path)
    query = _query(parts.query)
    url = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument({field: f"must be at most {MAX_URL_LENGTH} characters"})
    return url


def _split(text: str, field: str, what: str) -> SplitResult:
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidArgument({field: f"must be {what} without spaces"})
    try:
        return urlsplit(text)
    except ValueError:
        raise InvalidArgument({field: f"must be {what}"}) from None


def _host(parts: SplitResult, field: str) -> str:
    if "@" in parts.netloc:
        raise InvalidArgument({field: "must not contain user names or passwords"})
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidArgument({field: "must name a host"})
    try:
        ascii_host = host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidArgument({field: "is not a valid domain name"}) from None
    labels = ascii_host.split(".")
    if (
        len(ascii_host) > MAX_DOMAIN_LENGTH
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidArgument({field: "is not a valid domain name"})
    return ascii_host


def _port(parts: SplitResult, field: str) -> int | None:
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise InvalidArgument({field: "has an invalid port"})
    return port


def _path(path: str) -> str:
    path = _canonical_escapes(quote(_LONE_PERCENT.sub("%25", path), safe=_PATH_SAFE))
    segments: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    path = "/" + "/".join(segments)
    return path.rstrip("/") or "/"


def _canonical_escapes(text: str) -> str:
    """Decode escapes of unreserved characters, upper-case the hex digits of the others."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _PERCENT.sub(fix, text)


def _query(query: str) -> str:
    pairs = [
        (name, value)
        for name, value in parse_qsl(query, keep_blank_values=True)
        if not name.lower().startswith("utm_") and name.lower() not in _TRACKING_PARAMETERS
    ]
    pairs.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    return urlencode(pairs, quote_via=quote, safe="")


def normalize_terms(values: Iterable[str]) -> tuple[str, ...]:
    """Topics and keywords: whitespace collapsed, lower-cased, empty ones and repeats dropped."""
    terms: dict[str, None] = {}
    for value in values:
        term = " ".join(value.split()).lower()
        if term:
            terms.setdefault(term)
    return tuple(terms)

"""What the server derives from an article's markdown, and slugs. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import html
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from slugify import slugify

from storage.markdown import render_html as markdown_html

WORDS_PER_MINUTE = 238
MAX_SLUG_LENGTH = 200
DERIVED_SLUG_LENGTH = 80
FALLBACK_SLUG = "article"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

_LINK = re.compile(r'<a href="([^"]*)"')
_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"\w+(?:['’\-]\w+)*")  # a word: word characters, single joiners inside
# The same count for ASCII text without a match per word: runs of word characters (each
# word byte made "x", every other byte a space: a run starts at each " x") less the joiners
# that sit between two of them.
_ASCII_WORD_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ASCII_RUNS = bytes(0x78 if b in _ASCII_WORD_BYTES else 0x20 for b in range(256))
_JOINER = re.compile(r"['’\-](?<=\w['’\-])(?=\w)")


@dataclass(frozen=True, slots=True)
class Derived:
    content_html: str
    word_count: int
    reading_time_minutes: int
    internal_links: int
    external_links: int
    content_hash: str


def render_html(markdown: str) -> str:
    """CommonMark + GitHub extensions; raw HTML and javascript: links are left out."""
    return markdown_html(markdown)


def derive(markdown: str, content_html: str = "", site_url: str = "") -> Derived:
    """Counts come from the rendered markdown, so a caller's own HTML cannot skew them."""
    rendered = render_html(markdown)
    words = count_words(html.unescape(_TAG.sub(" ", rendered)))
    internal = external = 0
    site_host = urlsplit(site_url).hostname if site_url else None
    for href in _LINK.findall(rendered):
        if not href:  # a link the renderer neutralised (javascript: and the like)
            continue
        host = urlsplit(html.unescape(href)).hostname
        if host is None or host == site_host:
            internal += 1
        else:
            external += 1
    return Derived(
        content_html=content_html or rendered,
        word_count=words,
        reading_time_minutes=math.ceil(words / WORDS_PER_MINUTE),
        internal_links=internal,
        external_links=external,
        content_hash=markdown_hash(markdown),
    )


def count_words(text: str) -> int:
    """How many `_WORD`s `text` holds; ASCII text (the common case) ~3x faster than findall."""
    if not text.isascii():
        return len(_WORD.findall(text))
    runs = (b" " + text.encode().translate(_ASCII_RUNS)).count(b" x")
    return runs - len(_JOINER.findall(text))


def markdown_hash(markdown: str) -> str:
    """`content_hash`: what dedupe and a request's replay compare, without rendering."""
    return hashlib.sha256(markdown.encode()).hexdigest()


def slug_from_title(title: str) -> str:
    """Lower-case ASCII (transliterated), words joined by '-', cut at a word boundary."""
    return (
        slugify(title, max_length=DERIVED_SLUG_LENGTH, word_boundary=True, save_order=True)
        or FALLBACK_SLUG
    )


def with_suffix(base: str, n: int) -> str:
    """`base` for n == 1, else `base-n`, staying within MAX_SLUG_LENGTH."""
    if n == 1:
        return base
    suffix = f"-{n}"
    return base[: MAX_SLUG_LENGTH - len(suffix)].rstrip("-") + suffix


def next_free_slug(base: str, taken: set[str]) -> str:
    n = 1
    while with_suffix(base, n) in taken:
        n += 1
    return with_suffix(base, n)

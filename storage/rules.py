"""Validation rules shared by the API's servicers and the legacy import.

Plain Python values in (what a servicer reads from a message, or what a JSON file holds),
column values and field violations out; every failure ends as InvalidArgument. Types are
checked too, since JSON files can hold anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from storage import content
from storage.errors import InvalidArgument

ARTICLE_STATUSES = ("draft", "published", "archived")
MAX_CONTENT_BYTES = 2 * 1024 * 1024
MAX_LIST_ITEM_CHARS = 100
ARTICLE_LIST_LIMITS = {"secondary_keywords": 50, "tags": 50}
ARTICLE_TEXT_LIMITS = {
    "title": 500, "excerpt": 5000, "meta_title": 160, "meta_description": 320,
    "primary_keyword": 100, "wp_url": 2000, "wp_status": 50,
}  # fmt: skip

# The stages of the blog-poster pipeline whose results are kept (README lists them).
PIPELINE_STAGES = frozenset({
    "competitor_data", "keyword_research", "topic_recommendation", "outline", "article_draft",
    "seo_optimization", "fact_check_report", "image_generation", "quality_review",
    "wordpress_result",
})  # fmt: skip
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 2000
MAX_STRUCT_BYTES = 1024 * 1024
# content_hash: SHA-256 of the markdown in hex (storage.content), stored lower-case.
CONTENT_HASH = re.compile(r"[0-9a-f]{64}")


class Violations:
    """Collects field violations so one response names every bad field at once."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, field: str, description: str) -> None:
        self.fields.setdefault(field, description)

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.add(field, description)

    def collect(self, parse: Callable[..., Any], *args: Any, default: Any = None, **kw: Any) -> Any:
        """Run a parser that raises InvalidArgument, keeping its complaint with the others."""
        try:
            return parse(*args, **kw)
        except InvalidArgument as error:
            for field, description in error.violations.items():
                self.add(field, description)
            return default

    def raise_if_any(self) -> None:
        if self.fields:
            raise InvalidArgument(self.fields)


def article_values(v: Violations, prefix: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check the article fields given (by column name) and return them as column values.

    `status` None means not given (DRAFT on create); `wp_post_id` 0 or None means none.
    """
    values: dict[str, Any] = {}
    for name in fields.keys() & ARTICLE_TEXT_LIMITS.keys():
        value = fields[name]
        if not isinstance(value, str):
            v.add(prefix + name, "must be a string")
            continue
        value = values[name] = value.strip()
        if name == "title" and not value:
            v.add(prefix + name, "is required")
        else:
            check_text_length(v, prefix, name, value)
    check_http_url(v, prefix + "wp_url", values.get("wp_url", ""))
    if "slug" in fields:
        slug = values["slug"] = fields["slug"]
        if not isinstance(slug, str):
            v.add(prefix + "slug", "must be a string")
        elif slug and not (
            len(slug) <= content.MAX_SLUG_LENGTH and content.SLUG_PATTERN.match(slug)
        ):
            v.add(prefix + "slug", "must be lower-case letters and digits joined by single '-'")
    for name in ("content_markdown", "content_html"):
        if name in fields:
            value = values[name] = fields[name]
            if not isinstance(value, str):
                v.add(prefix + name, "must be a string")
            elif len(value.encode()) > MAX_CONTENT_BYTES:
                v.add(prefix + name, f"must be at most {MAX_CONTENT_BYTES} bytes of UTF-8")
    for name in fields.keys() & ARTICLE_LIST_LIMITS.keys():
        items = fields[name]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            v.add(prefix + name, "must be a list of strings")
            continue
        items = values[name] = [item.strip() for item in items]
        if len(items) > ARTICLE_LIST_LIMITS[name] or any(
            not i or len(i) > MAX_LIST_ITEM_CHARS for i in items
        ):
            v.add(prefix + name, f"at most {ARTICLE_LIST_LIMITS[name]} non-empty items of "
                  f"{MAX_LIST_ITEM_CHARS} characters")  # fmt: skip
    if "seo_score" in fields:
        score = values["seo_score"] = fields["seo_score"]
        if not _is_number(score):
            v.add(prefix + "seo_score", "must be a number between 0 and 100")
        elif not (math.isfinite(score) and 0 <= score <= 100):
            v.add(prefix + "seo_score", "must be between 0 and 100")
    if "wp_post_id" in fields:
        post = values["wp_post_id"] = fields["wp_post_id"] or None
        if post is not None and not _is_integer(post):
            v.add(prefix + "wp_post_id", "must be a whole number")
        elif post is not None and post < 0:
            v.add(prefix + "wp_post_id", "must not be negative")
    if "status" in fields:
        status = values["status"] = fields["status"] or None
        if status is not None and status not in ARTICLE_STATUSES:
            values["status"] = None
            v.add(prefix + "status", "must be DRAFT, PUBLISHED or ARCHIVED")
    return values


def check_text_length(v: Violations, prefix: str, name: str, value: str) -> None:
    """An article text field (ARTICLE_TEXT_LIMITS names it) within its character limit."""
    if len(value) > ARTICLE_TEXT_LIMITS[name]:
        v.add(prefix + name, f"must be at most {ARTICLE_TEXT_LIMITS[name]} characters")


def check_http_url(v: Violations, field: str, url: str) -> None:
    """Empty, or an http(s) URL (a link the service stores, never fetches)."""
    if url and not url.startswith(("http://", "https://")):
        v.add(field, "must be an http(s) URL")


def messages(v: Violations, field: str, items: Any) -> list[str]:
    """A pipeline's errors or warnings: a bounded list of non-empty strings."""
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        v.add(field, "must be a list of strings")
        return []
    items = [i.strip() for i in items]
    if len(items) > MAX_MESSAGES or any(not i or len(i) > MAX_MESSAGE_CHARS for i in items):
        v.add(field, f"at most {MAX_MESSAGES} non-empty messages of {MAX_MESSAGE_CHARS} characters")
    return items


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def content_hash(v: Violations, field: str, value: str) -> str | None:
    """A content_hash filter: 64 hex digits in either case, as stored (lower-case); None
    when empty."""
    value = value.strip().lower()
    if not value:
        return None
    v.check(bool(CONTENT_HASH.fullmatch(value)), field, "must be 64 hexadecimal digits (SHA-256)")
    return value

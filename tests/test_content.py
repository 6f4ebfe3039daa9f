"""Derived article fields and slugs: pure functions, no database."""

from __future__ import annotations

import hashlib

import pytest

from storage import content


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Hello World", "hello-world"),
        ("  The Ultimate Guide: SEO in 2026!  ", "the-ultimate-guide-seo-in-2026"),
        ("Café Déjà Vu", "cafe-deja-vu"),
        ("Привет, мир", "privet-mir"),
        ("Straße & Größe", "strasse-grosse"),
        ("日本語", "ri-ben-yu"),
        ("🎉🎉🎉", "article"),
        ("---", "article"),
        ("a" * 300, "a" * 80),
        ("word " * 40, ("word-" * 16)[:-1]),  # cut at a word boundary, at most 80 chars
    ],
)
def test_slug_from_title(title, slug):
    derived = content.slug_from_title(title)
    assert derived == slug
    assert content.SLUG_PATTERN.match(derived) and len(derived) <= content.DERIVED_SLUG_LENGTH


def test_next_free_slug_and_suffix_bounds():
    assert content.next_free_slug("guide", set()) == "guide"
    assert content.next_free_slug("guide", {"guide", "guide-2"}) == "guide-3"
    long = "x" * content.MAX_SLUG_LENGTH
    assert len(content.with_suffix(long, 12)) == content.MAX_SLUG_LENGTH


def test_derived_fields():
    markdown = (
        "# Ten Tips\n\nWrite **clear** prose. Don't stuff keywords.\n\n"
        "See [our guide](/guides/seo), [home](https://blog.example.com/), "
        "[Google](https://google.com/search) and [docs](https://docs.python.org).\n\n"
        "<script>alert(1)</script>\n\n[bad](javascript:alert(1))\n"
    )
    derived = content.derive(markdown, site_url="https://blog.example.com/post/1")
    assert derived.internal_links == 2  # relative and same host; the javascript: link is dropped
    assert derived.external_links == 2
    assert derived.word_count == 16
    assert derived.reading_time_minutes == 1
    assert derived.content_hash == hashlib.sha256(markdown.encode()).hexdigest()
    assert "<script>" not in derived.content_html and "javascript:" not in derived.content_html
    assert "<strong>clear</strong>" in derived.content_html


def test_reading_time_rounds_up_and_caller_html_is_kept():
    derived = content.derive("word " * 239, content_html="<p>mine</p>")
    assert derived.word_count == 239 and derived.reading_time_minutes == 2
    assert derived.content_html == "<p>mine</p>"
    assert content.derive("").reading_time_minutes == 0

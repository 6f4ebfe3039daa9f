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


MARKDOWN_SAMPLES = [
    "# Title\n\nA *paragraph* with [a link](https://example.com) and `code`.\n\n- one\n- two\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n~~gone~~ www.example.com\n\n- [ ] task\n- [x] done\n",
    "<script>alert(1)</script> raw <b>html</b>\n\n[x](javascript:alert(1))\n",
    "```python\nprint('hi')\n```\n\n> quote\n\n1. first\n2. second\n",
    "",
    "é ü 中文 🙂 " * 50,
]


@pytest.mark.parametrize("markdown", MARKDOWN_SAMPLES)
def test_render_html_matches_cmarkgfm(markdown):
    import cmarkgfm

    assert content.render_html(markdown) == cmarkgfm.github_flavored_markdown_to_html(markdown)


def test_cmarkgfm_abi_check_names_what_is_missing(monkeypatch):
    from storage import markdown

    markdown.check_abi()  # the locked cmarkgfm passes
    monkeypatch.setattr(markdown, "_BINDING_FUNCTIONS", (*markdown._BINDING_FUNCTIONS, "gone"))
    with pytest.raises(RuntimeError, match="lacks gone"):
        markdown.check_abi()


def test_cmarkgfm_is_pinned_below_the_next_major():
    """storage/markdown.py uses a private module: pyproject bounds the version it was written
    against, and the installed one is inside the bound."""
    import tomllib
    from importlib import metadata
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (spec,) = [
        Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("cmarkgfm")
    ]
    assert any(s.operator == "<" for s in spec.specifier), spec
    assert metadata.version("cmarkgfm") in spec.specifier


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_rendering_frees_what_cmark_allocates():
    """cmarkgfm's own wrapper leaks ~60 KB per 9 KB article: 2000 renders would add ~120 MB."""
    paragraph = "Some words with a [link](/x). " * 30
    article = "\n\n".join(f"## Part {i}\n\n{paragraph}" for i in range(8))
    for _ in range(200):  # warm the allocator up
        content.render_html(article)
    before = _rss_mb()
    for _ in range(2000):
        content.render_html(article)
    assert _rss_mb() - before < 15


def test_count_words_is_the_word_pattern_on_every_text():
    """The ASCII fast path counts exactly what `_WORD.findall` finds (joiners, underscores,
    digits, leading and trailing joiners, runs of them), and non-ASCII text takes the regex."""
    import random

    rng = random.Random(17)
    alphabet = "ab_19-'’ .,\n\t—é<>&"
    texts = ["", "-", "a-b-c d--e f'g h-", "_a_ 12-3 x''y", "don’t stop-and-go", "é-ü ok"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    for text in texts:
        assert content.count_words(text) == len(content._WORD.findall(text)), text
    assert content.count_words("a-b-c d--e f'g h-") == 5  # a-b-c, d, e, f'g, h

"""Domain and URL normalization: a pure table, no database."""

from __future__ import annotations

import pytest

from storage.errors import InvalidArgument
from storage.normalize import normalize_domain, normalize_url

DOMAINS = [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("  example.com  ", "example.com"),
    ("www.example.com", "example.com"),
    ("WWW.Example.com", "example.com"),
    ("https://www.example.com", "example.com"),
    ("http://example.com/blog/post?x=1#top", "example.com"),
    ("example.com/some/path", "example.com"),
    ("https://example.com:443", "example.com"),
    ("http://example.com:80/", "example.com"),
    ("example.com:8080", "example.com:8080"),
    ("example.com.", "example.com"),
    ("blog.example.co.uk", "blog.example.co.uk"),
    ("www.blog.example.com", "blog.example.com"),
    ("www.com", "www.com"),  # stripping would leave a bare TLD
    ("bücher.de", "xn--bcher-kva.de"),
    ("https://www.Bücher.DE/", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("münchen.example", "xn--mnchen-3ya.example"),
]

BAD_DOMAINS = [
    "",
    "   ",
    "localhost",
    "192.168.0.1",
    "exa_mple.com",
    "-example.com",
    "example-.com",
    "a..com",
    "a" * 64 + ".com",
    "ftp://example.com",
    "http://user:secret@example.com",
    "example.com:99999",
    "example.com:0",
    "example.com:port",
    "http://[::1]/",
    "exa mple.com",
]

URLS = [
    ("https://example.com/post", "https://example.com/post"),
    ("HTTPS://Example.COM/Post", "https://example.com/Post"),  # the path keeps its case
    ("http://example.com", "http://example.com/"),
    ("https://example.com/blog/", "https://example.com/blog"),
    ("https://example.com/#comments", "https://example.com/"),
    ("https://example.com/a#frag", "https://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:80/a", "https://example.com:80/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com/a?utm_source=x&utm_medium=y", "https://example.com/a"),
    ("https://example.com/a?id=7&utm_campaign=z", "https://example.com/a?id=7"),
    ("https://example.com/a?UTM_Source=x&id=7", "https://example.com/a?id=7"),
    ("https://example.com/a?fbclid=abc&gclid=def&p=2", "https://example.com/a?p=2"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
    ("https://example.com/a?tag=z&tag=a", "https://example.com/a?tag=z&tag=a"),
    ("https://example.com/a?", "https://example.com/a"),
    ("https://example.com/a?q=a+b", "https://example.com/a?q=a%20b"),
    ("https://example.com/a/./b/../c", "https://example.com/a/c"),
    ("https://example.com/%7euser/%e2%82%ac", "https://example.com/~user/%E2%82%AC"),
    ("https://example.com/100%", "https://example.com/100%25"),
    ("https://bücher.de/straße", "https://xn--bcher-kva.de/stra%C3%9Fe"),
    ("https://www.example.com/a", "https://www.example.com/a"),  # www kept in URLs
    (
        "https://Example.com:443/blog/post/?utm_source=news&b=2&a=1&fbclid=x#top",
        "https://example.com/blog/post?a=1&b=2",
    ),
]

BAD_URLS = [
    "",
    "example.com/a",
    "/relative/path",
    "mailto:someone@example.com",
    "javascript:alert(1)",
    "ftp://example.com/file",
    "http:///no-host",
    "https://user:pw@example.com/a",
    "https://example.com/a b",
    "https://localhost/a",
    "https://example.com:70000/",
    "https://example.com/" + "a" * 2048,
]


@pytest.mark.parametrize(("raw", "expected"), DOMAINS)
def test_domains(raw, expected):
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize("raw", BAD_DOMAINS)
def test_bad_domains_name_the_field(raw):
    with pytest.raises(InvalidArgument) as caught:
        normalize_domain(raw, field="competitor.domain")
    assert list(caught.value.violations) == ["competitor.domain"]


@pytest.mark.parametrize(("raw", "expected"), URLS)
def test_urls(raw, expected):
    assert normalize_url(raw) == expected


@pytest.mark.parametrize(("raw", "_expected"), URLS)
def test_urls_are_idempotent(raw, _expected):
    once = normalize_url(raw)
    assert normalize_url(once) == once


@pytest.mark.parametrize("raw", BAD_URLS)
def test_bad_urls_name_the_field(raw):
    with pytest.raises(InvalidArgument) as caught:
        normalize_url(raw, field="articles[3].url")
    assert list(caught.value.violations) == ["articles[3].url"]

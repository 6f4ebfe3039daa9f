"""Search quality: ranking on a query's positive part, snippets cut from the rendered text."""

from __future__ import annotations

import re

import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc


@pytest.fixture
def stub(new_account, connect) -> articles_pb2_grpc.ArticlesServiceStub:
    return articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))


def create(stub, **fields) -> str:
    article = pb.Article(**{"content_markdown": "x", **fields})
    return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article.id


def search(stub, query: str) -> list[pb.SearchResult]:
    return list(stub.SearchArticles(pb.SearchArticlesRequest(query=query)).results)


def test_a_negated_word_leaves_the_ranking_of_the_rest_alone(stub):
    """`seo -draft` matches like the whole query but ranks like `seo`: title, then tag and
    keyword hits, then body-only hits (a NOT in ts_rank's query used to score every match
    ~0, so all of them tied)."""
    ids = {
        create(stub, title="Two", content_markdown="All about seo here."): "body",
        create(stub, title="Three", content_markdown="x", tags=["seo"]): "tag",
        create(stub, title="SEO basics", content_markdown="x"): "title",
        create(stub, title="Four", content_markdown="x", primary_keyword="seo"): "keyword",
        create(stub, title="SEO draft", content_markdown="x"): "excluded",
    }
    plain = [(ids[r.article.id], r.rank) for r in search(stub, "seo")]
    negated = [(ids[r.article.id], r.rank) for r in search(stub, "seo -draft")]
    assert negated == [hit for hit in plain if hit[0] != "excluded"]  # same ranks, same order
    order = [name for name, _ in negated]
    assert order[0] == "title" and set(order[1:3]) == {"tag", "keyword"} and order[3] == "body"
    ranks = dict(negated)
    assert ranks["title"] > 1 > ranks["tag"] > 0 and ranks["keyword"] > 0 == ranks["body"]
    # A negated phrase that excludes nothing leaves the ranking as it is without it.
    assert [(ids[r.article.id], r.rank) for r in search(stub, 'seo -"rough draft"')] == plain


def test_snippets_are_cut_from_the_rendered_text(stub):
    markdown = "## Soil\n\nGood **soil** makes [gardening](https://example.com/g) easy.\n"
    article_id = create(stub, title="Plots", content_markdown=markdown)
    (hit,) = search(stub, "gardening")
    assert hit.article.id == article_id
    assert hit.snippet == "Soil Good soil makes <b>gardening</b> easy"


def test_the_excerpt_leads_and_markup_is_escaped(stub):
    create(stub, title="Plots", excerpt="Raised <beds> & more", content_markdown="Compost *well*.")
    (hit,) = search(stub, "compost")
    assert hit.snippet == "Raised &lt;beds&gt; &amp; more <b>Compost</b> well"


def test_a_window_cut_inside_a_tag_shows_no_markup(stub):
    """Deep in a long article full of links the window starts inside a tag: its tail is
    dropped, and nothing of the markdown or HTML shows."""
    links = " ".join(f"[word {i}](https://example.com/page-{i}?a=1&b=2)" for i in range(400))
    markdown = f"# Title\n\n{links}\n\nThen a **zeppelin** appeared over [the hill](/hill).\n"
    create(stub, title="Long read", content_markdown=markdown)
    (hit,) = search(stub, "zeppelins")
    assert "<b>zeppelin</b> appeared over the hill" in hit.snippet
    text = hit.snippet.replace("<b>", "").replace("</b>", "")
    assert not re.search(r"[<>#*\[\]]|\]\(|href|https?:|example\.com|=\"", text), hit.snippet
    assert hit.snippet == hit.snippet.strip() and "  " not in hit.snippet


def test_callers_html_is_stripped_too(stub):
    """A caller's own content_html is the rendered text: its tags never reach the snippet."""
    create(
        stub, title="Own HTML", content_markdown="Lanterns at night.",
        content_html='<p>Lanterns <script>alert(1)</script> at <a href="/x">night</a>.</p>',
    )  # fmt: skip
    (hit,) = search(stub, "lantern")
    assert hit.snippet == "<b>Lanterns</b> alert(1) at night"

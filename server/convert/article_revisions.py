"""Article revisions between storage and protobuf: ArticleRevision messages and diffs."""

from __future__ import annotations

from typing import Any

from blogstore.v1 import articles_pb2

from server.convert.articles import MUTABLE, article_to_proto
from server.protoconv import timestamp
from storage import revision_diff
from storage.errors import InvalidArgument
from storage.models import Article, ArticleRevision
from storage.repositories.articles import revision_article

# The fields a diff compares: those an update can set, in Article field-number order. The
# output-only ones follow from them (derived) or are bookkeeping (times, etag, provenance).
_FIELDS = sorted(articles_pb2.Article.DESCRIPTOR.fields, key=lambda f: f.number)
COMPARED_FIELDS = tuple(f.name for f in _FIELDS if f.name in MUTABLE)
_REPEATED = frozenset(f.name for f in _FIELDS if f.is_repeated)


def revision_to_proto(revision: ArticleRevision, *, full: bool) -> articles_pb2.ArticleRevision:
    article = revision_article(revision)
    message = articles_pb2.ArticleRevision(
        id=str(revision.id),
        article_id=str(revision.article_id),
        article=article_to_proto(article, full=full),
        create_time=timestamp(revision.create_time),
        actor_id=str(revision.actor_id or ""),
    )
    if revision.made_by_kind is not None:
        message.provenance.CopyFrom(message.article.provenance)
    return message


def context_lines(request: articles_pb2.DiffArticleRevisionRequest) -> int:
    if not request.HasField("context_lines"):
        return revision_diff.DEFAULT_CONTEXT_LINES
    if not 0 <= request.context_lines <= revision_diff.MAX_CONTEXT_LINES:
        raise InvalidArgument({"context_lines": f"must be 0 to {revision_diff.MAX_CONTEXT_LINES}"})
    return request.context_lines


def diff_response(
    revision: ArticleRevision, current: Article, *, context: int
) -> articles_pb2.DiffArticleRevisionResponse:
    """The revision's version against the current one: markdown diff and changed fields."""
    old, new = article_to_proto(revision_article(revision)), article_to_proto(current)
    diff = revision_diff.unified_diff(
        old.content_markdown, new.content_markdown,
        old_label=f"revision {revision.id}", new_label="current", context=context,
    )  # fmt: skip
    return articles_pb2.DiffArticleRevisionResponse(
        diff=diff.text,
        diff_coarse=diff.coarse,
        changed_fields=[name for name in COMPARED_FIELDS if _value(old, name) != _value(new, name)],
        revision_etag=old.etag,
        current_etag=new.etag,
    )


def _value(article: articles_pb2.Article, name: str) -> Any:
    value = getattr(article, name)
    return list(value) if name in _REPEATED else value

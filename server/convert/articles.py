"""Articles between protobuf and storage: Article messages, field validation, list filters.

Kept apart from the servicer so handlers stay thin; every ArticlesService RPC converts here.
"""

from __future__ import annotations

import uuid
from typing import Any

from blogstore.v1 import articles_pb2

from server.protoconv import datetime_or_none, etag, timestamp
from server.services.audit import ACTOR_KIND_TO_PROTO
from server.validation import Violations, list_owner, optional_uuid, owner_id
from storage import rules
from storage.actors import Actor
from storage.models import Article
from storage.repositories.article_dedupe import IfContentExists
from storage.repositories.article_reads import ArticleFilters
from storage.repositories.tags import TAG_ORDER_BY

MUTABLE = (
    "title", "slug", "content_markdown", "content_html", "excerpt", "meta_title",
    "meta_description", "primary_keyword", "secondary_keywords", "tags", "seo_score",
    "wp_post_id", "wp_url", "wp_status", "status", "pipeline_id",
)  # fmt: skip
OUTPUT_ONLY = (
    "id", "user_id", "word_count", "reading_time_minutes", "internal_links", "external_links",
    "content_hash", "publish_time", "create_time", "update_time", "delete_time", "etag",
    "provenance",
    "wp_modified_time", "wp_synced_version",
)  # fmt: skip
STATUS_TO_PROTO = {
    "draft": articles_pb2.ARTICLE_STATUS_DRAFT,
    "published": articles_pb2.ARTICLE_STATUS_PUBLISHED,
    "archived": articles_pb2.ARTICLE_STATUS_ARCHIVED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
IF_CONTENT_EXISTS: dict[int, IfContentExists] = {
    articles_pb2.IF_CONTENT_EXISTS_UNSPECIFIED: IfContentExists.CREATE,
    articles_pb2.IF_CONTENT_EXISTS_CREATE: IfContentExists.CREATE,
    articles_pb2.IF_CONTENT_EXISTS_RETURN_EXISTING: IfContentExists.RETURN_EXISTING,
    articles_pb2.IF_CONTENT_EXISTS_FAIL: IfContentExists.FAIL,
}


def article_to_proto(article: Article, *, full: bool = True) -> articles_pb2.Article:
    return articles_pb2.Article(**proto_fields(article, full=full))


def proto_fields(article: Any, *, full: bool) -> dict[str, Any]:
    """An article (ORM entity or row) as Article constructor arguments.

    Pages use repeated_field.add(**fields), which builds each message in place rather than
    building it and copying it into the response.
    """
    fields = dict(
        id=str(article.id),
        user_id=str(article.user_id),
        pipeline_id=str(article.pipeline_id or ""),
        title=article.title,
        slug=article.slug,
        excerpt=article.excerpt,
        meta_title=article.meta_title,
        meta_description=article.meta_description,
        primary_keyword=article.primary_keyword,
        secondary_keywords=article.secondary_keywords,
        tags=article.tags,
        seo_score=article.seo_score,
        wp_post_id=article.wp_post_id or 0,
        wp_url=article.wp_url,
        wp_status=article.wp_status,
        status=STATUS_TO_PROTO[article.status],
        word_count=article.word_count,
        reading_time_minutes=article.reading_time_minutes,
        internal_links=article.internal_links,
        external_links=article.external_links,
        content_hash=article.content_hash,
        publish_time=timestamp(article.publish_time),
        create_time=timestamp(article.create_time),
        update_time=timestamp(article.update_time),
        delete_time=timestamp(article.delete_time),
        etag=etag(article.version),
        wp_modified_time=timestamp(article.wp_modified_time),
        wp_synced_version=article.wp_synced_version or 0,
    )
    if article.made_by_kind is not None:  # None: made before provenance was recorded
        fields["provenance"] = provenance_fields(article)
    if full:
        fields["content_markdown"] = article.content_markdown
        fields["content_html"] = article.content_html
    return fields


def provenance_fields(row: Any) -> dict[str, Any]:
    """A version's provenance columns (storage/provenance.py) as Provenance arguments."""
    return dict(
        actor_kind=ACTOR_KIND_TO_PROTO.get(row.made_by_kind, 0),
        actor_id=str(row.made_by_id or ""),
        actor_name=row.made_by_name or "",
        request_id=row.made_request_id or "",
        pipeline_id=str(row.made_pipeline_id or ""),
        pipeline_stage=row.made_pipeline_stage or "",
    )


def pipeline_stage(v: Violations, field: str, value: str) -> str:
    """A request's pipeline_stage: empty, or a stage RecordStageResult knows."""
    stage = value.strip()
    if stage and stage not in rules.PIPELINE_STAGES:
        v.add(field, f"must be one of: {', '.join(sorted(rules.PIPELINE_STAGES))}")
    return stage


def is_full(view: int, default: int) -> bool:
    return (view or default) == articles_pb2.ARTICLE_VIEW_FULL


def article_fields(v: Violations, prefix: str, article: Any, paths: set[str]) -> dict[str, Any]:
    """Validate the fields named in `paths` (storage.rules) and convert them to column values."""
    fields = {
        name: list(getattr(article, name)) if name in rules.ARTICLE_LIST_LIMITS
        else getattr(article, name)
        for name in paths - {"status", "pipeline_id"}
    }  # fmt: skip
    if "status" in paths:  # UNSPECIFIED converts to None: DRAFT on create, invalid on update
        fields["status"] = STATUS_FROM_PROTO.get(article.status, article.status)
    values = rules.article_values(v, prefix, fields)
    if "pipeline_id" in paths:
        values["pipeline_id"] = v.collect(
            optional_uuid, prefix + "pipeline_id", article.pipeline_id
        )
    return values


def if_content_exists(v: Violations, value: int) -> IfContentExists:
    policy = IF_CONTENT_EXISTS.get(value)
    v.check(policy is not None, "if_content_exists", "is not a known option")
    return policy or IfContentExists.CREATE


def filters_from(request: Any, actor: Actor) -> ArticleFilters:
    v = Violations()
    status = None
    if request.status:
        status = STATUS_FROM_PROTO.get(request.status)
        v.check(status is not None, "status", "is not a known status")
    content_hash = rules.content_hash(v, "content_hash", getattr(request, "content_hash", ""))
    v.raise_if_any()
    return ArticleFilters(
        user_id=list_owner("user_id", request.user_id, actor),
        status=status,
        primary_keyword=request.primary_keyword.strip() or None,
        tag=request.tag.strip() or None,
        pipeline_id=optional_uuid("pipeline_id", request.pipeline_id),
        start_create_time=datetime_or_none(request, "start_create_time"),
        end_create_time=datetime_or_none(request, "end_create_time"),
        start_publish_time=datetime_or_none(request, "start_publish_time"),
        end_publish_time=datetime_or_none(request, "end_publish_time"),
        show_deleted=getattr(request, "show_deleted", False),
        content_hash=content_hash,
        needs_sync=getattr(request, "needs_sync", False),
    )


def tag_to_proto(row: Any) -> articles_pb2.Tag:
    return articles_pb2.Tag(name=row.tag, article_count=row.article_count)


def tags_request(request: Any, actor: Actor) -> tuple[uuid.UUID, str, str]:
    """ListTags' user (scope-checked), order (one of TAG_ORDER_BY) and prefix."""
    user_id = owner_id("user_id", request.user_id, actor)
    v = Violations()
    order_by = " ".join(request.order_by.split()).lower() or TAG_ORDER_BY[0]
    v.check(order_by in TAG_ORDER_BY, "order_by", f"must be one of: {', '.join(TAG_ORDER_BY)}")
    prefix = request.prefix.strip()
    v.check(
        len(prefix) <= rules.MAX_LIST_ITEM_CHARS,
        "prefix", f"must be the start of a tag (at most {rules.MAX_LIST_ITEM_CHARS} characters)",
    )  # fmt: skip
    v.raise_if_any()
    return user_id, order_by, prefix

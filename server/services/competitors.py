"""CompetitorsService: monitored competitors, crawler leases and discovered articles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from blogstore.v1 import competitors_pb2, competitors_pb2_grpc
from google.protobuf import json_format, struct_pb2

from server.context import current_caller
from server.convert.embeddings import embedding_value
from server.paging import PageTokens
from server.protoconv import datetime_or_none, etag, etag_version, timestamp
from server.validation import (
    Violations,
    list_owner,
    mask_paths,
    optional_uuid,
    owner_id,
    page_size,
    parse_uuid,
    text_field,
)
from storage.embeddings import Availability
from storage.errors import InvalidArgument
from storage.models import Competitor, CompetitorArticle
from storage.models.competitors import (
    DEFAULT_CHECK_FREQUENCY_HOURS,
    MAX_AUTHOR_LENGTH,
    MAX_CHECK_FREQUENCY_HOURS,
    MAX_NAME_LENGTH,
    MIN_CHECK_FREQUENCY_HOURS,
)
from storage.normalize import normalize_domain, normalize_terms, normalize_url
from storage.repositories import competitor_jobs
from storage.repositories.competitors import ArticleInput, CompetitorStats, merge_by_url
from storage.uow import Database, Tx

MAX_METADATA_BYTES = 64 * 1024
MAX_ERROR_LENGTH = 4000
MAX_CLAIM = 1000
MAX_LEASE_SECONDS = 86_400
MAX_UPSERT = 1000
MAX_TITLE_LENGTH = 1000
MAX_TERMS = 100
MAX_TERM_LENGTH = 200
CHECK_TIME_SKEW = dt.timedelta(minutes=5)

MUTABLE = ("domain", "name", "is_active", "check_frequency_hours", "next_check_time", "metadata")
OUTPUT_ONLY = (
    "id",
    "user_id",
    "last_check_time",
    "last_error",
    "total_articles_found",
    "new_articles_30d",
    "trending_topics",
    "create_time",
    "update_time",
    "etag",
    "lease_expire_time",
)


def competitor_to_proto(
    competitor: Competitor, stats: CompetitorStats | None = None
) -> competitors_pb2.Competitor:
    stats = stats or CompetitorStats()
    metadata = struct_pb2.Struct()
    metadata.update(competitor.metadata_)
    return competitors_pb2.Competitor(
        id=str(competitor.id),
        user_id=str(competitor.user_id),
        domain=competitor.domain,
        name=competitor.name,
        is_active=competitor.is_active,
        check_frequency_hours=competitor.check_frequency_hours,
        last_check_time=timestamp(competitor.last_check_time),
        next_check_time=timestamp(competitor.next_check_time),
        last_error=competitor.last_error,
        total_articles_found=stats.total_articles,
        new_articles_30d=stats.new_articles_30d,
        trending_topics=[
            competitors_pb2.TrendingTopic(topic=topic, count=count)
            for topic, count in stats.trending_topics
        ],
        metadata=metadata,
        create_time=timestamp(competitor.create_time),
        update_time=timestamp(competitor.update_time),
        etag=etag(competitor.version),
        lease_expire_time=timestamp(competitor.lease_expire_time),
    )


def article_to_proto(article: CompetitorArticle) -> competitors_pb2.CompetitorArticle:
    return competitors_pb2.CompetitorArticle(
        id=str(article.id),
        competitor_id=str(article.competitor_id),
        url=article.url,
        title=article.title,
        publish_date=timestamp(article.publish_date),
        author=article.author,
        word_count=article.word_count,
        main_topics=article.main_topics,
        keywords=article.keywords,
        social_shares=article.social_shares,
        backlinks=article.backlinks,
        discover_time=timestamp(article.discover_time),
        analyze_time=timestamp(article.analyze_time),
    )


def with_stats(tx: Tx, competitors: Sequence[Competitor]) -> list[tuple[Competitor, Any]]:
    """Pair each competitor with its statistics, computed for all of them at once."""
    stats = tx.competitors.stats([c.id for c in competitors])
    return [(c, stats.get(c.id)) for c in competitors]


def normalized(v: Violations, normalize: Callable[..., str], field: str, value: str) -> str:
    """Run a storage normalizer, collecting its complaint as a field violation."""
    return v.collect(normalize, value, field=field, default="")


def check_frequency(v: Violations, field: str, hours: int) -> int:
    hours = hours or DEFAULT_CHECK_FREQUENCY_HOURS
    v.check(
        MIN_CHECK_FREQUENCY_HOURS <= hours <= MAX_CHECK_FREQUENCY_HOURS,
        field,
        f"must be {MIN_CHECK_FREQUENCY_HOURS} to {MAX_CHECK_FREQUENCY_HOURS} hours",
    )
    return hours


def metadata_dict(v: Violations, field: str, message: competitors_pb2.Competitor) -> dict:
    if not message.HasField("metadata"):
        return {}
    v.check(
        message.metadata.ByteSize() <= MAX_METADATA_BYTES,
        field,
        f"must be at most {MAX_METADATA_BYTES} bytes",
    )
    return json_format.MessageToDict(message.metadata)


def terms(v: Violations, field: str, values: Sequence[str]) -> tuple[str, ...]:
    result = normalize_terms(values)
    v.check(len(result) <= MAX_TERMS, field, f"must have at most {MAX_TERMS} entries")
    v.check(
        all(len(t) <= MAX_TERM_LENGTH for t in result),
        field,
        f"entries must be at most {MAX_TERM_LENGTH} characters",
    )
    return result


def article_input(
    v: Violations, prefix: str, article: competitors_pb2.CompetitorArticle
) -> ArticleInput:
    for name in ("word_count", "social_shares", "backlinks"):
        v.check(getattr(article, name) >= 0, f"{prefix}.{name}", "must not be negative")
    return ArticleInput(
        url=normalized(v, normalize_url, f"{prefix}.url", article.url),
        title=text_field(
            v, f"{prefix}.title", article.title, max_length=MAX_TITLE_LENGTH, required=False
        ),
        publish_date=datetime_or_none(article, "publish_date"),
        author=text_field(
            v, f"{prefix}.author", article.author, max_length=MAX_AUTHOR_LENGTH, required=False
        ),
        word_count=article.word_count,
        main_topics=terms(v, f"{prefix}.main_topics", article.main_topics),
        keywords=terms(v, f"{prefix}.keywords", article.keywords),
        social_shares=article.social_shares,
        backlinks=article.backlinks,
        analyze_time=datetime_or_none(article, "analyze_time"),
    )


class CompetitorsServicer(competitors_pb2_grpc.CompetitorsServiceServicer):
    def __init__(self, db: Database, page_tokens: PageTokens, embeddings: Availability) -> None:
        self.db = db
        self.page_tokens = page_tokens
        self.embeddings = embeddings

    def CreateCompetitor(
        self, request: competitors_pb2.CreateCompetitorRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.CreateCompetitorResponse:
        caller = current_caller()
        message = request.competitor
        user_id = owner_id("competitor.user_id", message.user_id, caller.actor)
        v = Violations()
        domain = normalized(v, normalize_domain, "competitor.domain", message.domain)
        name = text_field(
            v, "competitor.name", message.name, max_length=MAX_NAME_LENGTH, required=False
        )
        values: dict[str, Any] = {
            "user_id": user_id,
            "domain": domain,
            "name": name or domain,
            "is_active": message.is_active if message.HasField("is_active") else True,
            "check_frequency_hours": check_frequency(
                v, "competitor.check_frequency_hours", message.check_frequency_hours
            ),
            "metadata_": metadata_dict(v, "competitor.metadata", message),
        }
        next_check_time = datetime_or_none(message, "next_check_time")
        if next_check_time is not None:
            values["next_check_time"] = next_check_time
        v.raise_if_any()
        request_id = optional_uuid("request_id", request.request_id)

        def create(tx: Tx):
            tx.users.get(user_id)  # scope: another user's id is NOT_FOUND
            competitor, created = tx.competitors.create(values, request_id)
            if created:
                tx.audit(
                    "competitor.create", "competitor", competitor.id,
                    user_id=competitor.user_id, domain=domain,
                )  # fmt: skip
            return with_stats(tx, [competitor])[0]

        competitor, stats = self.db.run(caller, create)
        return competitors_pb2.CreateCompetitorResponse(
            competitor=competitor_to_proto(competitor, stats)
        )

    def GetCompetitor(
        self, request: competitors_pb2.GetCompetitorRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.GetCompetitorResponse:
        caller = current_caller()
        competitor_id = parse_uuid("id", request.id)
        competitor, stats = self.db.read(
            caller, lambda tx: with_stats(tx, [tx.competitors.get(competitor_id)])[0]
        )
        return competitors_pb2.GetCompetitorResponse(
            competitor=competitor_to_proto(competitor, stats)
        )

    def ListCompetitors(
        self, request: competitors_pb2.ListCompetitorsRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.ListCompetitorsResponse:
        caller = current_caller()
        actor = caller.actor
        user_id = list_owner("user_id", request.user_id, actor)
        limit = page_size(request.page_size)
        is_active = request.is_active if request.HasField("is_active") else None
        filters = {"user_id": str(user_id or ""), "is_active": is_active}
        after = self.page_tokens.decode(request.page_token, filters)

        def list_competitors(tx: Tx):
            if user_id is not None:
                tx.users.get(user_id)
            page = tx.competitors.list(
                user_id=user_id, is_active=is_active, after=after, limit=limit
            )
            return with_stats(tx, page.items), page.next_cursor

        items, cursor = self.db.read(caller, list_competitors)
        return competitors_pb2.ListCompetitorsResponse(
            competitors=[competitor_to_proto(c, s) for c, s in items],
            next_page_token=self.page_tokens.encode(cursor, filters),
        )

    def UpdateCompetitor(
        self, request: competitors_pb2.UpdateCompetitorRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.UpdateCompetitorResponse:
        caller = current_caller()
        message = request.competitor
        competitor_id = parse_uuid("competitor.id", message.id)
        paths = mask_paths(request.update_mask, mutable=MUTABLE, output_only=OUTPUT_ONLY)
        v = Violations()
        changes: dict[str, Any] = {}
        if "domain" in paths:
            changes["domain"] = normalized(v, normalize_domain, "competitor.domain", message.domain)
        if "name" in paths:
            changes["name"] = text_field(
                v, "competitor.name", message.name, max_length=MAX_NAME_LENGTH, required=False
            )
        if "is_active" in paths:
            changes["is_active"] = message.is_active
        if "check_frequency_hours" in paths:
            changes["check_frequency_hours"] = check_frequency(
                v, "competitor.check_frequency_hours", message.check_frequency_hours
            )
        if "next_check_time" in paths:
            changes["next_check_time"] = datetime_or_none(
                message, "next_check_time"
            ) or dt.datetime.now(dt.UTC)
        if "metadata" in paths:
            changes["metadata_"] = metadata_dict(v, "competitor.metadata", message)
        v.raise_if_any()
        version = etag_version("competitor.etag", message.etag)

        def update(tx: Tx):
            competitor = tx.competitors.get(competitor_id)
            values = dict(changes)
            if "name" in values and not values["name"]:  # an empty name falls back to the domain
                values["name"] = values.get("domain") or competitor.domain
            competitor = tx.competitors.update(competitor, version, values)
            tx.audit(
                "competitor.update", "competitor", competitor.id,
                user_id=competitor.user_id, fields=sorted(paths),
            )  # fmt: skip
            return with_stats(tx, [competitor])[0]

        competitor, stats = self.db.run(caller, update)
        return competitors_pb2.UpdateCompetitorResponse(
            competitor=competitor_to_proto(competitor, stats)
        )

    def DeleteCompetitor(
        self, request: competitors_pb2.DeleteCompetitorRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.DeleteCompetitorResponse:
        caller = current_caller()
        competitor_id = parse_uuid("id", request.id)
        version = etag_version("etag", request.etag)

        def delete(tx: Tx):
            competitor = tx.competitors.get(competitor_id, lock="update")
            result = with_stats(tx, [competitor])[0]
            tx.competitors.delete(competitor, version)
            tx.audit(
                "competitor.delete", "competitor", competitor_id,
                user_id=competitor.user_id, domain=competitor.domain,
            )  # fmt: skip
            return result

        competitor, stats = self.db.run(caller, delete)
        return competitors_pb2.DeleteCompetitorResponse(
            competitor=competitor_to_proto(competitor, stats)
        )

    def ClaimDueCompetitors(
        self, request: competitors_pb2.ClaimDueCompetitorsRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.ClaimDueCompetitorsResponse:
        caller = current_caller()
        v = Violations()
        v.check(1 <= request.limit <= MAX_CLAIM, "limit", f"must be 1 to {MAX_CLAIM}")
        v.check(
            1 <= request.lease_seconds <= MAX_LEASE_SECONDS,
            "lease_seconds",
            f"must be 1 to {MAX_LEASE_SECONDS}",
        )
        v.raise_if_any()

        items = competitor_jobs.claim_due(
            self.db, caller, limit=request.limit, lease_seconds=request.lease_seconds
        )
        return competitors_pb2.ClaimDueCompetitorsResponse(
            competitors=[competitor_to_proto(c, s) for c, s in items]
        )

    def RecordCompetitorCheck(
        self, request: competitors_pb2.RecordCompetitorCheckRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.RecordCompetitorCheckResponse:
        caller = current_caller()
        competitor_id = parse_uuid("competitor_id", request.competitor_id)
        check_time = datetime_or_none(request, "check_time")
        error = request.error.strip()
        v = Violations()
        v.check(
            check_time is None or check_time <= dt.datetime.now(dt.UTC) + CHECK_TIME_SKEW,
            "check_time",
            "must not lie in the future",
        )
        v.check(
            len(error) <= MAX_ERROR_LENGTH,
            "error",
            f"must be at most {MAX_ERROR_LENGTH} characters",
        )
        v.raise_if_any()

        competitor, stats = competitor_jobs.record_check(
            self.db, caller, competitor_id, check_time, error
        )
        return competitors_pb2.RecordCompetitorCheckResponse(
            competitor=competitor_to_proto(competitor, stats)
        )

    def UpsertCompetitorArticles(
        self,
        request: competitors_pb2.UpsertCompetitorArticlesRequest,
        context: grpc.ServicerContext,
    ) -> competitors_pb2.UpsertCompetitorArticlesResponse:
        caller = current_caller()
        competitor_id = parse_uuid("competitor_id", request.competitor_id)
        if len(request.articles) > MAX_UPSERT:
            raise InvalidArgument({"articles": f"must have at most {MAX_UPSERT} entries"})
        v = Violations()
        articles = [
            article_input(v, f"articles[{i}]", article)
            for i, article in enumerate(request.articles)
        ]
        embeddings = {  # by normalized URL: a later article's wins, as in merge_by_url
            articles[i].url: value
            for i, article in enumerate(request.articles)
            if article.HasField("embedding")
            and (value := embedding_value(
                v, f"articles[{i}].embedding.", article.embedding, self.embeddings.dimensions
            )) is not None
        }  # fmt: skip
        v.raise_if_any()
        merged = merge_by_url(articles)

        def upsert(tx: Tx):
            competitor = tx.competitors.get(competitor_id, lock="key_share")
            if embeddings:
                self.embeddings.require(tx.session)
            result = tx.competitors.upsert_articles(competitor_id, merged)
            if embeddings:
                tx.embeddings.set_for_competitor_urls(competitor_id, competitor.user_id, embeddings)
            tx.audit(
                "competitor.upsert_articles",
                "competitor",
                competitor_id,
                user_id=competitor.user_id,
                created=result.created,
                updated=result.updated,
            )
            return result

        result = self.db.run(caller, upsert)
        return competitors_pb2.UpsertCompetitorArticlesResponse(
            created_count=result.created, updated_count=result.updated
        )

    def ListCompetitorArticles(
        self, request: competitors_pb2.ListCompetitorArticlesRequest, context: grpc.ServicerContext
    ) -> competitors_pb2.ListCompetitorArticlesResponse:
        caller = current_caller()
        competitor_id = parse_uuid("competitor_id", request.competitor_id)
        limit = page_size(request.page_size)
        start = datetime_or_none(request, "start_publish_time")
        end = datetime_or_none(request, "end_publish_time")
        if start is not None and end is not None and start >= end:
            raise InvalidArgument({"end_publish_time": "must lie after start_publish_time"})
        keyword = next(iter(normalize_terms([request.keyword])), "")
        filters = {
            "competitor_id": str(competitor_id),
            "start_publish_time": start,
            "end_publish_time": end,
            "keyword": keyword,
        }
        after = self.page_tokens.decode(request.page_token, filters)

        def list_articles(tx: Tx):
            tx.competitors.get(competitor_id)
            return tx.competitors.list_articles(
                competitor_id,
                start_publish_time=start,
                end_publish_time=end,
                keyword=keyword,
                after=after,  # type: ignore[arg-type]
                limit=limit,
            )

        page = self.db.read(caller, list_articles)
        return competitors_pb2.ListCompetitorArticlesResponse(
            articles=[article_to_proto(a) for a in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, filters),
        )

"""ArticlesService: articles with revisions, soft delete, ranked search and bulk import."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from blogstore.v1 import articles_pb2, articles_pb2_grpc

from server.context import current_caller
from server.convert.articles import (
    MUTABLE,
    OUTPUT_ONLY,
    article_fields,
    article_to_proto,
    filters_from,
    is_full,
    proto_fields,
)
from server.fairness import FairShare
from server.paging import PageTokens, filter_key
from server.protoconv import etag_version, timestamp
from server.services.article_embeddings import EmbeddingsMixin, with_embedding
from server.validation import (
    Violations,
    mask_paths,
    optional_uuid,
    owner_id,
    page_size,
    parse_uuid,
)
from storage import rules
from storage.actors import Actor
from storage.embeddings import DEFAULT_DIMENSIONS, Availability
from storage.errors import Conflict, InvalidArgument, NotFound, Unavailable
from storage.queries import get_article, list_articles, search_articles
from storage.repositories.article_reads import ORDER_BY
from storage.repositories.articles import CONTENT_FIELDS, NewArticle, from_snapshot, with_derived

MAX_BATCH = 1000
MAX_QUERY_CHARS = 1000
_BATCH_WAIT_SECONDS = 60.0
_REQUEST_NAMESPACE = uuid.UUID("6b1d3a4e-2f57-4c1b-9a56-3e0f5d1c7b20")


class ArticlesServicer(EmbeddingsMixin, articles_pb2_grpc.ArticlesServiceServicer):
    def __init__(
        self, db, page_tokens: PageTokens, *, max_concurrent_batches: int = 2,
        slots: Callable[[int], threading.BoundedSemaphore] = threading.BoundedSemaphore,
        batch_shares: FairShare, embeddings: Availability | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.embeddings = embeddings or Availability(DEFAULT_DIMENSIONS)
        # Each principal's share of the batch slots, counted while it waits for one too.
        self._batch_shares = batch_shares
        self.page_tokens = page_tokens
        # A batch of 1000 articles holds ~10x its request size while it runs: bound how many
        # run at once so that memory is set by configuration, not by clients. (`slots`:
        # telemetry's semaphore counts the slots in use.)
        self._batch_slots = slots(max_concurrent_batches)

    def _new_article(self, v: Violations, prefix: str, article: Any, actor: Actor) -> dict:
        values = article_fields(v, prefix, article, set(MUTABLE))
        values["user_id"] = owner_id(prefix + "user_id", article.user_id, actor)
        values["status"] = values["status"] or "draft"
        return values

    def CreateArticle(
        self, request: articles_pb2.CreateArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.CreateArticleResponse:
        caller = current_caller()
        v = Violations()
        values = self._new_article(v, "article.", request.article, caller.actor)
        (embedding,) = self._embedding_inputs(v, ["article."], [request.article])
        v.raise_if_any()
        item = NewArticle(
            with_derived(values),
            request_id=optional_uuid("request_id", request.request_id),
        )

        def create(tx):
            _require_links(tx, [item])
            (article,) = tx.articles.create_many([item])
            self._store_embeddings(tx, [(article, embedding)])
            tx.audit(
                "article.create", "article", article.id, user_id=article.user_id, slug=article.slug
            )
            return article

        article = self.db.run(caller, create)
        return articles_pb2.CreateArticleResponse(
            article=with_embedding(article_to_proto(article), embedding)
        )

    def BatchCreateArticles(
        self, request: articles_pb2.BatchCreateArticlesRequest, context: grpc.ServicerContext
    ) -> articles_pb2.BatchCreateArticlesResponse:
        caller = current_caller()
        if not 1 <= len(request.articles) <= MAX_BATCH:
            raise InvalidArgument({"articles": f"must hold 1 to {MAX_BATCH} articles"})
        with self._batch_shares.holding(caller.actor):
            wait = _BATCH_WAIT_SECONDS
            if caller.deadline is not None:
                wait = max(0.0, min(wait, caller.deadline - time.monotonic()))
            if not self._batch_slots.acquire(timeout=wait):
                raise Unavailable("too many batch imports in progress on this server; retry")
            try:
                return self._batch_create(caller, request)
            finally:
                self._batch_slots.release()

    def _batch_create(self, caller, request) -> articles_pb2.BatchCreateArticlesResponse:
        batch_id = optional_uuid("request_id", request.request_id)
        v = Violations()
        items: list[NewArticle] = []
        given_slugs: dict[tuple, int] = {}
        for i, article in enumerate(request.articles):
            prefix = f"articles[{i}]."
            values = self._new_article(v, prefix, article, caller.actor)
            if values.get("slug"):
                key = (values["user_id"], values["slug"])
                if key in given_slugs:
                    v.add(prefix + "slug", f"repeats articles[{given_slugs[key]}].slug")
                given_slugs.setdefault(key, i)
            request_id = uuid.uuid5(_REQUEST_NAMESPACE, f"{batch_id}:{i}") if batch_id else None
            items.append(NewArticle(values, request_id=request_id))
        prefixes = [f"articles[{i}]." for i in range(len(request.articles))]
        embeddings = self._embedding_inputs(v, prefixes, request.articles)
        v.raise_if_any()
        for item in items:
            item.values = with_derived(item.values)

        def create(tx):
            _require_links(tx, items)
            articles = tx.articles.create_many(items)
            self._store_embeddings(tx, list(zip(articles, embeddings, strict=True)))
            by_owner: dict[Any, list[Any]] = {}
            for article in articles:
                by_owner.setdefault(article.user_id, []).append(article)
            for owner, owned in by_owner.items():  # one event per owner: each one sees its own
                tx.audit(
                    "article.batch_create", "article", owned[0].id, user_id=owner, count=len(owned)
                )
            return articles

        articles = self.db.run(caller, create)
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_BASIC)
        return articles_pb2.BatchCreateArticlesResponse(
            articles=[
                with_embedding(article_to_proto(a, full=full), e)
                for a, e in zip(articles, embeddings, strict=True)
            ]
        )

    def GetArticle(
        self, request: articles_pb2.GetArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.GetArticleResponse:
        caller = current_caller()
        if request.id:
            article_id = parse_uuid("id", request.id)
            article = get_article(self.db, caller, article_id)  # the hot path: one round trip
            if article is None:
                raise NotFound("article", article_id)
        elif request.slug:
            user_id = owner_id("user_id", request.user_id, caller.actor)
            article = self.db.run(caller, lambda tx: tx.articles.get_by_slug(user_id, request.slug))
        else:
            raise InvalidArgument({"id": "give an id, or a user_id and slug"})
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_FULL)
        return articles_pb2.GetArticleResponse(article=article_to_proto(article, full=full))

    def ListArticles(
        self, request: articles_pb2.ListArticlesRequest, context: grpc.ServicerContext
    ) -> articles_pb2.ListArticlesResponse:
        caller = current_caller()
        filters = filters_from(request, caller.actor)
        order_by = " ".join(request.order_by.split()).lower() or ORDER_BY[0]
        if order_by not in ORDER_BY:
            raise InvalidArgument({"order_by": f"must be one of: {', '.join(ORDER_BY)}"})
        limit = page_size(request.page_size)
        key = filter_key(filters, order_by=order_by)
        after = self.page_tokens.decode(request.page_token, key)
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_BASIC)
        page = list_articles(
            self.db, caller, filters, order_by=order_by, after=after, limit=limit, full=full
        )
        response = articles_pb2.ListArticlesResponse(
            next_page_token=self.page_tokens.encode(page.next_cursor, key)
        )
        add = response.articles.add
        for article in page.items:
            add(**proto_fields(article, full=full))
        return response

    def SearchArticles(
        self, request: articles_pb2.SearchArticlesRequest, context: grpc.ServicerContext
    ) -> articles_pb2.SearchArticlesResponse:
        caller = current_caller()
        query = request.query.strip()
        if not query:
            raise InvalidArgument({"query": "is required"})
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument({"query": f"must be at most {MAX_QUERY_CHARS} characters"})
        filters = filters_from(request, caller.actor)
        limit = page_size(request.page_size)
        key = filter_key(filters, query=query)
        after = self.page_tokens.decode(request.page_token, key)
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_BASIC)
        page = search_articles(self.db, caller, query, filters, after=after, limit=limit, full=full)
        response = articles_pb2.SearchArticlesResponse(
            next_page_token=self.page_tokens.encode(page.next_cursor, key)
        )
        add = response.results.add
        for hit in page.items:
            add(article=proto_fields(hit.article, full=full), rank=hit.rank, snippet=hit.snippet)
        return response

    def UpdateArticle(
        self, request: articles_pb2.UpdateArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.UpdateArticleResponse:
        caller = current_caller()
        article_id = parse_uuid("article.id", request.article.id)
        paths = mask_paths(
            request.update_mask, mutable=(*MUTABLE, "embedding"), output_only=OUTPUT_ONLY
        )
        v = Violations()
        changes = article_fields(v, "article.", request.article, paths - {"embedding"})
        (embedding,) = (
            self._embedding_inputs(v, ["article."], [request.article])
            if "embedding" in paths else (None,)
        )  # fmt: skip
        for required in ("slug", "status"):
            if required in paths and not changes[required]:
                v.add(f"article.{required}", "is required")
        v.raise_if_any()
        version = etag_version("article.etag", request.article.etag)

        def update(tx):
            article = tx.articles.get(article_id)
            if changes.get("pipeline_id"):
                tx.pipelines.require_owned({(article.user_id, changes["pipeline_id"])})
            if changes:
                article = tx.articles.update(article, version, changes)
            elif version is not None and version != article.version:
                raise Conflict("the article changed meanwhile (stale etag)")
            if "embedding" in paths:  # an embedding alone changes no field: no revision
                self._store_embeddings(tx, [(article, embedding)], remove=True)
            tx.audit(
                "article.update", "article", article.id,
                user_id=article.user_id, fields=sorted(paths),
            )  # fmt: skip
            return article

        article = self.db.run(caller, update)
        return articles_pb2.UpdateArticleResponse(
            article=with_embedding(article_to_proto(article), embedding)
        )

    def PublishArticle(
        self, request: articles_pb2.PublishArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.PublishArticleResponse:
        caller = current_caller()
        article_id = parse_uuid("id", request.id)
        v = Violations()
        v.check(request.wp_post_id >= 0, "wp_post_id", "must not be negative")
        rules.check_http_url(v, "wp_url", request.wp_url)
        rules.check_text_length(v, "", "wp_url", request.wp_url)
        rules.check_text_length(v, "", "wp_status", request.wp_status)
        v.raise_if_any()
        version = etag_version("etag", request.etag)
        changes = {
            "status": "published",
            "wp_post_id": request.wp_post_id or None,
            "wp_url": request.wp_url,
            "wp_status": request.wp_status or "publish",
        }

        def publish(tx):
            article = tx.articles.update(
                tx.articles.get(article_id), version, changes, publish_now=True
            )
            tx.audit(
                "article.publish", "article", article.id, user_id=article.user_id,
                wp_post_id=article.wp_post_id, wp_url=article.wp_url, wp_status=article.wp_status,
            )  # fmt: skip
            return article

        article = self.db.run(caller, publish)
        return articles_pb2.PublishArticleResponse(article=article_to_proto(article))

    def DeleteArticle(
        self, request: articles_pb2.DeleteArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.DeleteArticleResponse:
        caller = current_caller()
        article_id = parse_uuid("id", request.id)
        version = etag_version("etag", request.etag)

        def delete(tx):
            article = tx.articles.soft_delete(tx.articles.get(article_id), version)
            tx.audit("article.delete", "article", article.id, user_id=article.user_id)
            return article

        article = self.db.run(caller, delete)
        return articles_pb2.DeleteArticleResponse(article=article_to_proto(article, full=False))

    def UndeleteArticle(
        self, request: articles_pb2.UndeleteArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.UndeleteArticleResponse:
        caller = current_caller()
        article_id = parse_uuid("id", request.id)

        def undelete(tx):
            article = tx.articles.undelete(tx.articles.get(article_id))
            tx.audit("article.undelete", "article", article.id, user_id=article.user_id)
            return article

        article = self.db.run(caller, undelete)
        return articles_pb2.UndeleteArticleResponse(article=article_to_proto(article))

    def ListArticleRevisions(
        self, request: articles_pb2.ListArticleRevisionsRequest, context: grpc.ServicerContext
    ) -> articles_pb2.ListArticleRevisionsResponse:
        caller = current_caller()
        article_id = parse_uuid("article_id", request.article_id)
        limit = page_size(request.page_size)
        key = {"article_id": str(article_id)}
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.run(
            caller, lambda tx: tx.articles.list_revisions(article_id, after=after, limit=limit)
        )
        revisions = [
            articles_pb2.ArticleRevision(
                id=str(r.id),
                article_id=str(r.article_id),
                article=article_to_proto(from_snapshot(r.snapshot)),
                create_time=timestamp(r.create_time),
                actor_id=str(r.actor_id or ""),
            )
            for r in page.items
        ]
        return articles_pb2.ListArticleRevisionsResponse(
            revisions=revisions, next_page_token=self.page_tokens.encode(page.next_cursor, key)
        )

    def RestoreArticleRevision(
        self, request: articles_pb2.RestoreArticleRevisionRequest, context: grpc.ServicerContext
    ) -> articles_pb2.RestoreArticleRevisionResponse:
        caller = current_caller()
        article_id = parse_uuid("article_id", request.article_id)
        revision_id = parse_uuid("revision_id", request.revision_id)
        version = etag_version("etag", request.etag)

        def restore(tx):
            article = tx.articles.get(article_id)
            revision = tx.articles.get_revision(article_id, revision_id)
            old = from_snapshot(revision.snapshot)
            changes = {name: getattr(old, name) for name in CONTENT_FIELDS}
            article = tx.articles.update(article, version, changes)
            tx.audit(
                "article.restore", "article", article.id,
                user_id=article.user_id, revision_id=str(revision_id),
            )  # fmt: skip
            return article

        article = self.db.run(caller, restore)
        return articles_pb2.RestoreArticleRevisionResponse(article=article_to_proto(article))


def _require_links(tx, items: list[NewArticle]) -> None:
    """Owners must be visible users; a pipeline_id must name a pipeline of the same owner."""
    tx.users.require_visible({item.values["user_id"] for item in items})
    links = {
        (item.values["user_id"], item.values["pipeline_id"])
        for item in items
        if item.values.get("pipeline_id")
    }
    if links:
        tx.pipelines.require_owned(links)

"""ArticlesService: articles with revisions, soft delete, ranked search and bulk import."""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from blogstore.v1 import articles_pb2, articles_pb2_grpc

from server.article_cache import ArticleCache
from server.batch_queue import BatchAdmission
from server.context import current_caller
from server.convert.article_revisions import context_lines, diff_response, revision_to_proto
from server.convert.articles import (
    MUTABLE,
    OUTPUT_ONLY,
    article_fields,
    article_to_proto,
    filters_from,
    if_content_exists,
    is_full,
    pipeline_stage,
    proto_fields,
    tag_to_proto,
    tags_request,
)
from server.fairness import FairShare
from server.paging import PageTokens, filter_key
from server.protoconv import datetime_or_none, etag_version
from server.services.article_embeddings import EmbeddingsMixin, with_embedding
from server.services.article_get import ArticleGetMixin
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
from storage.embeddings import Availability
from storage.errors import Conflict, InvalidArgument, Retryable
from storage.provenance import PipelineStep
from storage.queries import list_articles, search_articles
from storage.repositories import article_create, article_updates
from storage.repositories.article_dedupe import IfContentExists
from storage.repositories.article_inserts import fits_one
from storage.repositories.article_reads import ORDER_BY
from storage.repositories.articles import (
    CONTENT_FIELDS,
    NewArticle,
    from_snapshot,
    with_derived,
    with_hash,
)
from storage.repositories.audit import event_values

MAX_BATCH = 1000
MAX_QUERY_CHARS = 1000
BATCH_METHOD = "/blogstore.v1.ArticlesService/BatchCreateArticles"
_REQUEST_NAMESPACE = uuid.UUID("6b1d3a4e-2f57-4c1b-9a56-3e0f5d1c7b20")


class ArticlesServicer(ArticleGetMixin, EmbeddingsMixin, articles_pb2_grpc.ArticlesServiceServicer):
    def __init__(
        self, db, page_tokens: PageTokens, *, max_concurrent_batches: int = 2,
        slots: Callable[[int], threading.BoundedSemaphore] = threading.BoundedSemaphore,
        batch_shares: FairShare, embeddings: Availability,
        article_cache: ArticleCache | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        # GetArticle's replies (server/article_cache.py); None when it is off
        self.article_cache = (
            article_cache if article_cache is not None and article_cache.enabled else None
        )
        self.embeddings = embeddings
        self.page_tokens = page_tokens
        # A batch of 1000 articles holds ~10x its request size while it runs: bound how many
        # run at once so that memory is set by configuration, not by clients. A call waits
        # for its slot (and its principal's share of them) BEFORE its body is read: the
        # request interceptor enters `batch_admission` first (app.py, server/batch_queue.py).
        self.batch_admission = BatchAdmission(slots(max_concurrent_batches), batch_shares)

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
        stage = pipeline_stage(v, "pipeline_stage", request.pipeline_stage)
        if stage and not values.get("pipeline_id"):
            v.add("pipeline_stage", "needs article.pipeline_id (the pipeline run of the stage)")
        policy = if_content_exists(v, request.if_content_exists)
        (embedding,) = self._embedding_inputs(v, ["article."], [request.article])
        v.raise_if_any()
        item = NewArticle(
            with_derived(values),
            request_id=optional_uuid("request_id", request.request_id),
            pipeline_stage=stage,
        )

        fast = policy is IfContentExists.CREATE and embedding is None and fits_one(item)
        article = article_create.create_now(self.db, caller, item) if fast else None
        if article is not None:  # the common case: one round trip, no unit of work
            return articles_pb2.CreateArticleResponse(article=article_to_proto(article))

        def create(tx):
            if policy is IfContentExists.CREATE and not fast:  # with an embedding: in the tx
                article = tx.articles.create_one(item)
                if article is not None:
                    self._store_embeddings(tx, [(article, embedding)])
                    return article
            _require_links(tx, [item])
            (article,) = tx.articles.create_many([item], if_content_exists=policy)
            if article.id == item.id:  # not a retry, nor content that exists: written now
                self._store_embeddings(tx, [(article, embedding)])
                tx.audit(
                    "article.create", "article", article.id,
                    user_id=article.user_id, slug=article.slug,
                )  # fmt: skip
            return article

        article = self.db.run(caller, create)
        return articles_pb2.CreateArticleResponse(
            article=with_embedding(article_to_proto(article), embedding)
        )

    def BatchCreateArticles(
        self, request: articles_pb2.BatchCreateArticlesRequest, context: grpc.ServicerContext
    ) -> articles_pb2.BatchCreateArticlesResponse:
        # Runs holding a batch slot: RequestInterceptor.admit(BATCH_METHOD, batch_admission).
        if not 1 <= len(request.articles) <= MAX_BATCH:
            raise InvalidArgument({"articles": f"must hold 1 to {MAX_BATCH} articles"})
        return self._batch_create(current_caller(), request)

    def _batch_create(self, caller, request) -> articles_pb2.BatchCreateArticlesResponse:
        batch_id = optional_uuid("request_id", request.request_id)
        v = Violations()
        stage = pipeline_stage(v, "pipeline_stage", request.pipeline_stage)
        policy = if_content_exists(v, request.if_content_exists)
        items: list[NewArticle] = []
        given: dict[tuple, int] = {}  # (field, owner, value) -> the first item giving it
        for i, article in enumerate(request.articles):
            prefix = f"articles[{i}]."
            values = self._new_article(v, prefix, article, caller.actor)
            for name in ("slug", "wp_post_id"):
                if values.get(name):
                    key = (name, values["user_id"], values[name])
                    if key in given:
                        v.add(prefix + name, f"repeats articles[{given[key]}].{name}")
                    given.setdefault(key, i)
            if stage and not values.get("pipeline_id"):
                v.add(prefix + "pipeline_id", "is required with pipeline_stage")
            request_id = uuid.uuid5(_REQUEST_NAMESPACE, f"{batch_id}:{i}") if batch_id else None
            items.append(NewArticle(values, request_id=request_id, pipeline_stage=stage))
        prefixes = [f"articles[{i}]." for i in range(len(request.articles))]
        embeddings = self._embedding_inputs(v, prefixes, request.articles)
        v.raise_if_any()
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_BASIC)
        for item, article in zip(items, request.articles, strict=True):
            # A BASIC answer needs no HTML: render each row as it is written, and read the
            # markdown from the request then (one copy per batch, not two).
            item.derive_late = not full
            if item.derive_late:
                item.values = with_hash(item.values)
                del item.values["content_markdown"]
                item.markdown = functools.partial(getattr, article, "content_markdown")
            else:
                item.values = with_derived(item.values)

        def create(tx):
            _require_links(tx, items)
            articles = tx.articles.create_many(items, if_content_exists=policy, batch=True)
            written = zip(items, articles, embeddings, strict=True)
            self._store_embeddings(tx, [(a, e) for item, a, e in written if a.id == item.id])
            by_owner: dict[Any, list[Any]] = {}
            for item, article in zip(items, articles, strict=True):
                if article.id == item.id:  # written now (not a retry, nor existing content)
                    by_owner.setdefault(article.user_id, []).append(article)
            for owner, owned in by_owner.items():  # one event per owner: each one sees its own
                tx.audit(
                    "article.batch_create", "article", owned[0].id, user_id=owner, count=len(owned)
                )
            return articles

        articles = self.db.run(caller, create)
        return articles_pb2.BatchCreateArticlesResponse(
            articles=[
                with_embedding(article_to_proto(a, full=full), e)
                for a, e in zip(articles, embeddings, strict=True)
            ]
        )

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
        stage = pipeline_stage(v, "pipeline_stage", request.pipeline_stage)
        step_pipeline_id = v.collect(optional_uuid, "pipeline_id", request.pipeline_id)
        v.raise_if_any()
        version = etag_version("article.etag", request.article.etag)
        content = article_updates.needs_content(changes)

        def event(article, step):
            return event_values(
                caller, "article.update", "article", article.id, user_id=article.user_id,
                details={"fields": sorted(paths), **_step_details(step)},
            )  # fmt: skip

        def update_now() -> Any:
            """The common change (no pipeline to check, no embedding): a read and a versioned
            write, each one round trip of its own, without a unit of work."""
            article = article_updates.load_now(self.db, caller, article_id, content=content)
            step = _pipeline_step(None, article.user_id, None, article.pipeline_id, stage)
            return article_updates.update_now(
                self.db, caller, article, version, changes, step=step, audit=event(article, step)
            )

        def update(tx):  # off the ORM (storage/repositories/article_updates.py)
            article = article_updates.load(tx.session, caller.actor, article_id, content=content)
            if changes.get("pipeline_id"):
                tx.pipelines.require_owned({(article.user_id, changes["pipeline_id"])})
            own = changes.get("pipeline_id", article.pipeline_id)
            step = _pipeline_step(tx, article.user_id, step_pipeline_id, own, stage)
            audit = event(article, step)
            if changes:
                article = article_updates.update(
                    tx.session, caller, article, version, changes, step=step, audit=audit
                )
            elif version is not None and version != article.version:
                raise Conflict("the article changed meanwhile (stale etag)")
            if "embedding" in paths:  # an embedding alone changes no field: no revision
                self._store_embeddings(tx, [(article, embedding)], remove=True)
            if not changes:
                tx.audit(
                    "article.update", "article", article.id,
                    user_id=article.user_id, **audit["details"],
                )  # fmt: skip
            return article

        article = None
        if changes and step_pipeline_id is None and not {"pipeline_id", "embedding"} & paths:
            with contextlib.suppress(Retryable):  # a deadlock wrote nothing: the general path
                article = self._write_now(article_id, update_now)
        if article is None:
            article = self._write(caller, article_id, update)
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
        modified_time = datetime_or_none(request, "wp_modified_time")
        changes = {
            "status": "published",
            "wp_post_id": request.wp_post_id or None,
            "wp_url": request.wp_url,
            "wp_status": request.wp_status or "publish",
        }

        def publish(tx):
            article = tx.articles.publish(
                tx.articles.get(article_id), version, changes, modified_time
            )
            tx.audit(
                "article.publish", "article", article.id, user_id=article.user_id,
                wp_post_id=article.wp_post_id, wp_url=article.wp_url, wp_status=article.wp_status,
            )  # fmt: skip
            return article

        article = self._write(caller, article_id, publish)
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

        article = self._write(caller, article_id, delete)
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

        article = self._write(caller, article_id, undelete)
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
        revisions = [revision_to_proto(r, full=True) for r in page.items]
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
        v = Violations()
        stage = pipeline_stage(v, "pipeline_stage", request.pipeline_stage)
        step_pipeline_id = v.collect(optional_uuid, "pipeline_id", request.pipeline_id)
        v.raise_if_any()

        def restore(tx):
            article = tx.articles.get(article_id)
            revision = tx.articles.get_revision(article_id, revision_id)
            old = from_snapshot(revision.snapshot)
            changes = {name: getattr(old, name) for name in CONTENT_FIELDS}
            step = _pipeline_step(tx, article.user_id, step_pipeline_id, article.pipeline_id, stage)
            article = tx.articles.update(article, version, changes, step=step)
            tx.audit(
                "article.restore", "article", article.id,
                user_id=article.user_id, revision_id=str(revision_id), **_step_details(step),
            )  # fmt: skip
            return article

        article = self._write(caller, article_id, restore)
        return articles_pb2.RestoreArticleRevisionResponse(article=article_to_proto(article))

    def GetArticleRevision(
        self, request: articles_pb2.GetArticleRevisionRequest, context: grpc.ServicerContext
    ) -> articles_pb2.GetArticleRevisionResponse:
        caller = current_caller()
        article_id, revision_id = _revision_ids(request)
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_FULL)

        def read(tx):
            tx.articles.get(article_id)  # scope: another user's article is NOT_FOUND
            return tx.articles.get_revision(article_id, revision_id)

        revision = self.db.run(caller, read)
        return articles_pb2.GetArticleRevisionResponse(
            revision=revision_to_proto(revision, full=full)
        )

    def DiffArticleRevision(
        self, request: articles_pb2.DiffArticleRevisionRequest, context: grpc.ServicerContext
    ) -> articles_pb2.DiffArticleRevisionResponse:
        caller = current_caller()
        article_id, revision_id = _revision_ids(request)
        lines = context_lines(request)

        def read(tx):
            article = tx.articles.get(article_id)
            return tx.articles.get_revision(article_id, revision_id), article

        revision, current = self.db.run(caller, read)
        return diff_response(revision, current, context=lines)  # bounded work, no transaction

    def ListTags(
        self, request: articles_pb2.ListTagsRequest, context: grpc.ServicerContext
    ) -> articles_pb2.ListTagsResponse:
        caller = current_caller()
        user_id, order_by, prefix = tags_request(request, caller.actor)
        limit = page_size(request.page_size)
        key = {"user_id": str(user_id), "order_by": order_by, "prefix": prefix.lower()}
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.run(
            caller,
            lambda tx: tx.tags.list(
                user_id, order_by=order_by, prefix=prefix, after=after, limit=limit
            ),
        )
        return articles_pb2.ListTagsResponse(
            tags=[tag_to_proto(row) for row in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )


def _revision_ids(request: Any) -> tuple[uuid.UUID, uuid.UUID]:
    v = Violations()
    article_id = v.collect(parse_uuid, "article_id", request.article_id)
    revision_id = v.collect(parse_uuid, "revision_id", request.revision_id)
    v.raise_if_any()
    return article_id, revision_id


def _pipeline_step(
    tx, owner: uuid.UUID, given: uuid.UUID | None, own: uuid.UUID | None, stage: str
) -> PipelineStep | None:
    """The pipeline run behind a change (provenance): the request's pipeline_id, which must be
    a pipeline of the article's owner; else, when a stage is given, the article's own."""
    if given is not None:
        tx.pipelines.require_owned({(owner, given)})
        return PipelineStep(given, stage)
    if not stage:
        return None
    if own is None:
        raise InvalidArgument({"pipeline_stage": "needs pipeline_id: the article has no pipeline"})
    return PipelineStep(own, stage)


def _step_details(step: PipelineStep | None) -> dict[str, str]:
    """What the audit event adds about a pipeline change."""
    return {"pipeline_id": str(step.pipeline_id), "stage": step.stage} if step else {}


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

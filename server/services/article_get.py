"""ArticlesService's GetArticle, the hot read, and its reply cache: a mixin of
ArticlesServicer. The cache (server/article_cache.py) keeps replies by id; a hit is answered
only if the caller's scope admits the cached article's owner, the check the database's own
query (storage/queries.get_article) and row-level security make on a miss.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from blogstore.v1 import articles_pb2

from server.article_cache import ArticleCache
from server.context import current_caller
from server.convert.articles import is_full, proto_fields
from server.validation import owner_id, parse_uuid
from storage.actors import Caller
from storage.errors import InvalidArgument, NotFound
from storage.queries import get_article

T = TypeVar("T")


class ArticleGetMixin:
    db: Any
    article_cache: ArticleCache | None

    def GetArticle(  # by id: the reply encoded (server/decoding.py sends bytes as they are)
        self, request: articles_pb2.GetArticleRequest, context: grpc.ServicerContext
    ) -> articles_pb2.GetArticleResponse | bytes:
        caller = current_caller()
        full = is_full(request.view, articles_pb2.ARTICLE_VIEW_FULL)
        if request.id:
            return self._get_by_id(caller, parse_uuid("id", request.id), full)
        if not request.slug:
            raise InvalidArgument({"id": "give an id, or a user_id and slug"})
        user_id = owner_id("user_id", request.user_id, caller.actor)
        article = self.db.read(caller, lambda tx: tx.articles.get_by_slug(user_id, request.slug))
        return articles_pb2.GetArticleResponse(article=proto_fields(article, full=full))

    def _get_by_id(self, caller: Caller, article_id: uuid.UUID, full: bool) -> bytes:
        owner = caller.actor.owner_scope()  # None: any user's; anonymous: PermissionDenied
        key = str(article_id)
        cache = self.article_cache
        if caller.read_after is not None and self.db.replicas is not None:
            # A consistency token asks for the write it names, which another process's cache
            # may hold the old row of until the NOTIFY comes: the database answers.
            cache = None
        generation = -1
        if cache is not None:
            hit, generation = cache.get(key, full)
            if hit is not None:
                if owner is not None and hit[0] != str(owner):  # as the query's owner filter
                    raise NotFound("article", article_id)
                return hit[1]
        # The hot path: one round trip. A row for the cache comes from the primary.
        article = get_article(self.db, caller, article_id, on_primary=cache is not None)
        if article is None:
            raise NotFound("article", article_id)
        # Built in place from its fields: Article(...) then GetArticleResponse(article=...)
        # would copy the whole message (its markdown and HTML) a second time.
        reply = articles_pb2.GetArticleResponse(
            article=proto_fields(article, full=full)
        ).SerializeToString()
        if cache is not None:
            cache.put(key, full, str(article.user_id), reply, generation)
        return reply

    def _write(self, caller: Caller, article_id: uuid.UUID, work: Callable[[Any], T]) -> T:
        """db.run(caller, work) for a change of one article, which this process then no longer
        answers from its cache (read-your-writes; other processes learn it by NOTIFY)."""
        return self._write_now(article_id, lambda: self.db.run(caller, work))

    def _write_now(self, article_id: uuid.UUID, work: Callable[[], T]) -> T:
        """work() (which commits a change of the article), then the article out of the cache."""
        try:
            return work()
        finally:  # also after a failure: the outcome of a lost commit is unknown
            if self.article_cache is not None:
                self.article_cache.evict([str(article_id)])

"""ArticlesService's embedding RPCs (SetEmbeddings, FindSimilarArticles) and the embedding
writes of Create/BatchCreate/UpdateArticle: a mixin of ArticlesServicer, kept apart so that
the servicer module stays one screenful per job. Storage: storage/repositories/embeddings.py.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from blogstore.v1 import articles_pb2

from server.context import current_caller
from server.convert import embeddings as convert
from server.convert.articles import proto_fields
from server.services.competitors import article_to_proto as competitor_article_to_proto
from server.validation import Violations, owner_id, parse_uuid
from storage.embeddings import Availability
from storage.repositories.embeddings import Neighbour, Query, Target


class EmbeddingsMixin:
    db: Any
    embeddings: Availability

    def SetEmbeddings(
        self, request: articles_pb2.SetEmbeddingsRequest, context: grpc.ServicerContext
    ) -> articles_pb2.SetEmbeddingsResponse:
        caller = current_caller()
        items = convert.set_items(request, self.embeddings.dimensions)

        def set_embeddings(tx):
            self.embeddings.require(tx.session)
            owners = tx.embeddings.owners(list(items))
            values = {t: v for t, v in items.items() if v is not None}
            set_count, removed = tx.embeddings.write(owners, values)
            by_owner: dict[uuid.UUID, list[Target]] = {}
            for target, owner in owners.items():
                by_owner.setdefault(owner, []).append(target)
            for owner, targets in by_owner.items():  # one event per owner: each sees its own
                tx.audit(
                    "article.set_embeddings", "article", targets[0].id, user_id=owner,
                    count=len(targets), removed=sum(1 for t in targets if items[t] is None),
                    models=sorted({v[0] for t in targets if (v := items[t]) is not None}),
                )  # fmt: skip
            return set_count, removed

        set_count, removed = self.db.run(caller, set_embeddings)
        return articles_pb2.SetEmbeddingsResponse(set_count=set_count, removed_count=removed)

    def FindSimilarArticles(
        self, request: articles_pb2.FindSimilarArticlesRequest, context: grpc.ServicerContext
    ) -> articles_pb2.FindSimilarArticlesResponse:
        caller = current_caller()
        v = Violations()
        limit = request.limit or convert.DEFAULT_LIMIT
        v.check(1 <= limit <= convert.MAX_LIMIT, "limit", f"must be 0 to {convert.MAX_LIMIT}")
        max_distance = request.max_distance if request.HasField("max_distance") else None
        if max_distance is not None:
            v.check(
                math.isfinite(max_distance) and 0 <= max_distance <= 2,
                "max_distance", "must be 0 to 2",
            )  # fmt: skip
        by_vector = request.HasField("embedding")
        article_id = None
        vector = None
        if request.article_id and by_vector:
            v.add("embedding", "give an article_id or an embedding, not both")
        elif request.article_id:
            article_id = v.collect(parse_uuid, "article_id", request.article_id)
        elif by_vector:
            vector = convert.embedding_value(
                v, "embedding.", request.embedding, self.embeddings.dimensions, required=True
            )
        else:
            v.add("article_id", "give an article_id or an embedding")
        v.raise_if_any()
        if request.user_id or vector is not None:
            user_id = owner_id("user_id", request.user_id, caller.actor)
        else:
            user_id = None  # the query article's owner

        def find(tx):
            status = self.embeddings.require(tx.session)
            if article_id is not None:
                query = tx.embeddings.query_of(article_id, user_id)
            else:
                assert vector is not None and user_id is not None
                query = Query(user_id, vector[0], vector[1])
            found = tx.embeddings.nearest(
                query, competitors=request.include_competitors, limit=limit, status=status
            )
            return query.model, found

        model, found = self.db.run(caller, find)
        if max_distance is not None:
            found = [n for n in found if n.distance <= max_distance]
        return articles_pb2.FindSimilarArticlesResponse(results=_results(found), model=model)

    # -- embeddings carried by Create/BatchCreate/UpdateArticle ----------------------------
    def _embedding_inputs(
        self, v: Violations, prefixes: Sequence[str], articles: Sequence[Any]
    ) -> list[convert.Value | None]:
        """Each article's embedding (None where it has none), checked."""
        dimensions = self.embeddings.dimensions
        return [
            convert.embedding_value(v, prefix + "embedding.", article.embedding, dimensions)
            if article.HasField("embedding") else None
            for prefix, article in zip(prefixes, articles, strict=True)
        ]  # fmt: skip

    def _store_embeddings(
        self, tx: Any, pairs: Sequence[tuple[Any, convert.Value | None]], *, remove: bool = False
    ) -> None:
        """Store the embeddings given with articles (rows); with `remove`, a None removes one."""
        wanted = [(a, value) for a, value in pairs if value is not None or remove]
        if not wanted:
            return
        self.embeddings.require(tx.session)
        owners = {Target(a.id): a.user_id for a, _ in wanted}
        values = {Target(a.id): value for a, value in wanted if value is not None}
        tx.embeddings.write(owners, values)


def with_embedding(message: articles_pb2.Article, value: convert.Value | None) -> Any:
    """The response's article with the embedding written (model and dimensions) echoed."""
    echoed = convert.echo(value)
    if echoed is not None:
        message.embedding.CopyFrom(echoed)
    return message


def _results(found: Sequence[Neighbour]) -> list[articles_pb2.SimilarArticle]:
    out = []
    for n in found:
        item: dict[str, Any] = {"distance": n.distance}
        if n.competitor:
            item["competitor_article"] = competitor_article_to_proto(n.row)
        else:
            item["article"] = articles_pb2.Article(**proto_fields(n.row, full=False))
        out.append(articles_pb2.SimilarArticle(**item))
    return out

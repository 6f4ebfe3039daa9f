"""The receive limit: the largest request a client can legitimately send, from the field limits.

The largest single-item request is a CreateArticle (or UpdateArticle) with every field at its
limit: both contents at MAX_CONTENT_BYTES, each text field at its character limit in 4-byte
UTF-8, full keyword and tag lists (storage/rules.py), about 4.1 MiB. Batches
(BatchCreateArticles and UpsertCompetitorArticles, up to 1000 items each) are bounded as a
whole by MAX_BATCH_BYTES: 1000 articles of a typical 20 KB fit with room, and two imports in
flight (each holds ~10x its request) stay within a few hundred MiB. Anything larger is refused
by gRPC itself with RESOURCE_EXHAUSTED before it is read into the server.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from blogstore.v1 import articles_pb2

from storage import content, rules

MAX_BATCH_BYTES = 32 * 1024 * 1024


@functools.cache
def largest_article_request_bytes() -> int:
    """The encoded size of a CreateArticle with every field at its limit (built once)."""
    wide = "\U0001f600"  # 4 bytes of UTF-8 per character: the most a character limit allows
    some_id = str(uuid.UUID(int=0))
    lists: dict[str, Any] = {
        name: [wide * rules.MAX_LIST_ITEM_CHARS] * count
        for name, count in rules.ARTICLE_LIST_LIMITS.items()
    }
    article = articles_pb2.Article(
        user_id=some_id,
        pipeline_id=some_id,
        slug="a" * content.MAX_SLUG_LENGTH,
        content_markdown="x" * rules.MAX_CONTENT_BYTES,
        content_html="x" * rules.MAX_CONTENT_BYTES,
        seo_score=99.5,
        wp_post_id=2**63 - 1,
        status=articles_pb2.ARTICLE_STATUS_ARCHIVED,
        **{name: wide * limit for name, limit in rules.ARTICLE_TEXT_LIMITS.items()},
        **lists,
    )
    return articles_pb2.CreateArticleRequest(article=article, request_id=some_id).ByteSize()


def max_request_bytes() -> int:
    """`grpc.max_receive_message_length`: no legitimate request is larger."""
    return max(MAX_BATCH_BYTES, largest_article_request_bytes())

"""Tags: one user's tag counts (migration 0017 keeps them), keyset-paged in two orders."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, or_, select

from storage.models import ArticleTagCount
from storage.repositories.base import ScopedRepository
from storage.repositories.paging import Page, to_page

TAG_ORDER_BY = ("count desc", "name")
_MAX_CODE_POINT = 0x10FFFF


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The tag_key range (COLLATE "C": code-point order) of keys starting with `prefix`."""
    key = prefix.lower()
    last = ord(key[-1])
    if last >= _MAX_CODE_POINT:  # nothing sorts after it: no upper bound
        return key, None
    return key, key[:-1] + chr(last + 1)


class TagRepository(ScopedRepository[ArticleTagCount]):
    model = ArticleTagCount
    resource = "tag"

    def list(
        self, user_id: uuid.UUID, *, order_by: str, prefix: str, after: tuple | None, limit: int
    ) -> Page[Any]:
        """A page of `user_id`'s tags in `order_by` (one of TAG_ORDER_BY), each an index
        range: (user_id, article_count desc, tag_key) or the key (user_id, tag_key)."""
        t = ArticleTagCount
        stmt = self.scoped(select(t.tag, t.tag_key, t.article_count)).where(t.user_id == user_id)
        if prefix:
            low, high = prefix_range(prefix)
            stmt = stmt.where(t.tag_key >= low)
            if high is not None:
                stmt = stmt.where(t.tag_key < high)
        if order_by == "name":
            if after is not None:
                stmt = stmt.where(t.tag_key > after[0])
            stmt = stmt.order_by(t.tag_key)
            key = lambda row: (row.tag_key,)  # noqa: E731
        else:
            if after is not None:
                count, tag_key = after
                stmt = stmt.where(
                    or_(
                        t.article_count < count,
                        and_(t.article_count == count, t.tag_key > tag_key),
                    )
                )
            stmt = stmt.order_by(t.article_count.desc(), t.tag_key)
            key = lambda row: (row.article_count, row.tag_key)  # noqa: E731
        rows = self.session.execute(stmt.limit(limit + 1)).all()
        return to_page(rows, limit, key=key)

"""Per-user tag counts over live articles, kept by triggers on articles (migration 0017).

`tag_key` is lower(tag): tags differing only in case count together. It is COLLATE "C",
so name order is code-point order and a prefix is an index range. `tag` is the spelling
the tag was first counted with (see the migration). `article_tag_count_changes` is
transaction-local staging: each statement on articles adds its net changes there and one
deferred trigger applies them at commit, in key order (so concurrent imports queue on the
count rows instead of deadlocking); its rows never outlive their transaction.
"""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, Table, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base


class ArticleTagCount(Base):
    __tablename__ = "article_tag_counts"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    tag_key: Mapped[str] = mapped_column(Text(collation="C"), primary_key=True)
    tag: Mapped[str] = mapped_column(Text)
    article_count: Mapped[int]

    __table_args__ = (
        CheckConstraint("article_count > 0", name="article_count_positive"),
        # ListTags' default order, count desc then name: a keyset range of this index.
        Index(
            "ix_article_tag_counts_user_id_article_count",
            "user_id",
            text("article_count DESC"),
            "tag_key",
        ),
    )


# Staging, written and emptied inside one transaction (no key: rows are only ever read and
# deleted all together by their own transaction, which alone can see them).
article_tag_count_changes = Table(
    "article_tag_count_changes",
    Base.metadata,
    Column("user_id", Uuid, nullable=False),
    Column("tag_key", Text(collation="C"), nullable=False),
    Column("tag", Text, nullable=False),
    Column("delta", Integer, nullable=False),
)

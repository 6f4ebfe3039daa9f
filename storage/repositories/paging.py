"""Keyset paging shared by repositories: newest first on (create_time, id)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_

T = TypeVar("T")

Cursor = tuple[dt.datetime, uuid.UUID]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: Cursor | None


def newest_first(stmt: Select[Any], model: Any, after: Cursor | None, limit: int) -> Select[Any]:
    """Order by (create_time, id) descending, start below `after`, fetch one extra row."""
    if after is not None:
        stmt = stmt.where(tuple_(model.create_time, model.id) < tuple_(*after))
    return stmt.order_by(model.create_time.desc(), model.id.desc()).limit(limit + 1)


def to_page(rows: Sequence[T], limit: int) -> Page[T]:
    """Cut the extra row fetched by `newest_first` into a next-page cursor."""
    if len(rows) <= limit:
        return Page(rows, None)
    last: Any = rows[limit - 1]
    return Page(rows[:limit], (last.create_time, last.id))

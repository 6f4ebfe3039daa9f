"""Keyset paging shared by repositories: newest first on (create_time, id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_

T = TypeVar("T")

Cursor = tuple[Any, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: Cursor | None


def newest_first(stmt: Select, model: Any, after: Cursor | None, limit: int) -> Select:
    """Order by (create_time, id) descending, start below `after`, fetch one extra row."""
    if after is not None:
        stmt = stmt.where(tuple_(model.create_time, model.id) < tuple_(*after))
    return stmt.order_by(model.create_time.desc(), model.id.desc()).limit(limit + 1)


def to_page(
    rows: Sequence[T], limit: int, key: Callable[[Any], tuple[Any, ...]] | None = None
) -> Page[T]:
    """Cut the extra row fetched beyond `limit` into a next-page cursor (default: newest first)."""
    if len(rows) <= limit:
        return Page(rows, None)
    last: Any = rows[limit - 1]
    return Page(rows[:limit], key(last) if key else (last.create_time, last.id))


def after_key(columns: Sequence[Any], values: Sequence[Any], *, descending: bool) -> Any:
    """Rows strictly after `values` in the order of `columns` (all one direction)."""
    left, right = tuple_(*columns), tuple_(*values)
    return left < right if descending else left > right

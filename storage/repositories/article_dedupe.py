"""Content dedupe for article creates (if_content_exists): which items already exist.

Race-free by a transaction-scoped advisory lock per (owner, content_hash), taken before the
check and held until commit or rollback. Two identical creates at once queue on the lock; the
second checks only after the first has committed, and since the unit of work runs in READ
COMMITTED (each statement sees what committed before it began) the check then finds the
first one's article. Only RETURN_EXISTING and FAIL take the lock, so the default CREATE
pays nothing; a CREATE racing a RETURN_EXISTING may make a second article, which is what
CREATE asks for.

Why not the alternatives: a unique index on (user_id, content_hash) would forbid the
duplicates that CREATE must still be able to make; SERIALIZABLE would fail one of two twins
with a serialization error and rerun the whole call (and every other call in SERIALIZABLE
pays for predicate locks); SELECT ... FOR UPDATE locks nothing when no article exists yet,
which is exactly the racy case.

A batch takes all its locks in one statement in key order, so two batches sharing keys wait
for each other instead of deadlocking. Keys are 64 bits of SHA-256: a collision between two
different pairs only makes one create wait for the other.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Text, Uuid, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from storage.errors import AlreadyExists, Existing
from storage.models import Article

_LOCK_NAMESPACE = b"blogstore:article-content:"
# One lock per array element, taken in the array's order.
_LOCK = select(func.pg_advisory_xact_lock(func.unnest(cast(bindparam("keys"), ARRAY(BigInteger)))))


class IfContentExists(enum.StrEnum):
    CREATE = "create"
    RETURN_EXISTING = "return_existing"
    FAIL = "fail"


Key = tuple[uuid.UUID, str]  # (owner, content_hash)


def key_of(values: dict[str, Any]) -> Key:
    return values["user_id"], values["content_hash"]


def lock_key(key: Key) -> int:
    """A signed 64-bit advisory lock key for (owner, content_hash)."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + key[0].bytes + key[1].encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock(session: Session, keys: set[Key]) -> None:
    """Hold the keys' advisory locks until the transaction ends (in key order)."""
    if keys:
        session.execute(_LOCK, {"keys": sorted({lock_key(k) for k in keys})})


def oldest_live(session: Session, scoped: Callable[[Any], Any], keys: set[Key]) -> dict[Key, Any]:
    """The oldest live article of each (owner, content_hash) in `keys` that has one."""
    if not keys:
        return {}
    # Two arrays (one index scan of ix_articles_content_hash_user_id), then the exact pairs.
    stmt = (
        scoped(select(Article))
        .where(
            Article.content_hash == func.any(bindparam("hashes", type_=ARRAY(Text))),
            Article.user_id == func.any(cast(bindparam("owners", type_=ARRAY(Text)), ARRAY(Uuid))),
            Article.delete_time.is_(None),
        )
        .order_by(Article.create_time.desc(), Article.id.desc())
    )
    params = {"hashes": sorted({k[1] for k in keys}), "owners": sorted({str(k[0]) for k in keys})}
    found: dict[Key, Any] = {}
    for article in session.scalars(stmt, params):  # newest first: the oldest is written last
        key = (article.user_id, article.content_hash)
        if key in keys:
            found[key] = article
    return found


def resolve(
    session: Session,
    scoped: Callable[[Any], Any],
    items: Sequence[Any],
    policy: IfContentExists,
    label: Callable[[Any], str],
) -> tuple[list[Any], dict[uuid.UUID, Any], dict[uuid.UUID, uuid.UUID]]:
    """Split NewArticle items (in request order) under `policy` (not CREATE).

    Returns the items still to insert; the existing article for each item that has one; and,
    for a later item repeating an earlier one's content, the earlier item's id. Under FAIL,
    either kind of repeat raises AlreadyExists (its Existing names the article, or the
    earlier item's `label`); `label(item)` ("articles[i]" in a batch) prefixes the message.
    """
    keys = {key_of(item.values) for item in items}
    lock(session, keys)
    existing = oldest_live(session, scoped, keys)
    first: dict[Key, Any] = {}
    to_insert: list[Any] = []
    found: dict[uuid.UUID, Any] = {}
    repeats: dict[uuid.UUID, uuid.UUID] = {}
    for item in items:
        key = key_of(item.values)
        article, earlier = existing.get(key), first.get(key)
        if policy is IfContentExists.FAIL and (article is not None or earlier is not None):
            raise AlreadyExists(
                "article",
                "content_markdown",
                existing=_existing(article, earlier, label, key[0]),
                item=label(item),
            )
        if article is not None:
            found[item.id] = article
        elif earlier is not None:
            repeats[item.id] = earlier.id
        else:
            first[key] = item
            to_insert.append(item)
    return to_insert, found, repeats


def _existing(
    article: Any, earlier: Any, label: Callable[[Any], str], owner: uuid.UUID
) -> Existing:
    if article is not None:
        return Existing(
            name=str(article.id),
            owner=f"user:{article.user_id}",
            description="a live article of the same owner has the same content_markdown "
            f"(content_hash {article.content_hash})",
        )
    return Existing(
        name=label(earlier),
        owner=f"user:{owner}",
        description=f"{label(earlier)} of this batch has the same content_markdown",
    )

"""GetArticle replies kept in memory per process: bounded, invalidated by NOTIFY.

What is kept is the reply GetArticle built from the row (one per view), encoded (the bytes
sent, which the memory bound counts exactly), with the owner the row names. A hit still
applies the caller's scope (server/services/article_get.py), so the cache never shows a
caller what the database would not. Only replies by id are kept, and only of articles that
exist (a NotFound is never cached).

An entry is dropped when this process changes the article (evict, after the commit), and
when any process, command or plain SQL does: migration 0021's triggers NOTIFY
`blogstore_articles` from the changing transaction with the ids (or "all" for a large or
TRUNCATE statement); storage/notify.py delivers it on the process's one LISTEN connection.
Without that connection the cache is bypassed, and it is emptied when it comes back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from storage.notify import ChangeListener

NOTIFY_CHANNEL = "blogstore_articles"  # migration 0021's triggers
_OVERHEAD_BYTES = 256  # per entry beyond the reply's bytes: key, tuple, dict slot


class ArticleCache:
    """(article id, full view) -> (owner id, encoded reply), least recently used out first,
    within `max_entries` entries and `max_bytes` bytes (the replies and ~256 bytes each).

    A fill quotes the generation its lookup saw: an invalidation meanwhile moves it, so a row
    read before a change's commit cannot be put in after that change's NOTIFY.
    """

    def __init__(self, max_entries: int, max_bytes: int, listener: ChangeListener | None):
        on = max_entries > 0 and max_bytes > 0 and listener is not None
        self.max_entries = max_entries if on else 0
        self.max_bytes = max_bytes if on else 0
        self._listener = listener
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, bool], tuple[str, bytes, int]] = OrderedDict()
        self._bytes = 0
        self._generation = 0
        if listener is not None and on:
            listener.subscribe(NOTIFY_CHANNEL, self._on_change, self.clear)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def usable(self) -> bool:
        """On, and the LISTEN connection is up (else every call goes to the database)."""
        return (
            self.max_entries > 0
            and self._listener is not None
            and self._listener.connected.is_set()
        )

    def get(self, article_id: str, full: bool) -> tuple[tuple[str, bytes] | None, int]:
        """(owner id, reply) or None, and the generation a miss's fill must quote."""
        if not self.usable:
            return None, -1
        key = (article_id, full)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None, self._generation
            self._entries.move_to_end(key)
            return (found[0], found[1]), self._generation

    def put(self, article_id: str, full: bool, owner: str, reply: bytes, generation: int) -> None:
        """Keep `reply` (of `owner`'s article) if nothing changed since get() gave `generation`."""
        if generation < 0 or not self.usable:
            return
        size = len(reply) + _OVERHEAD_BYTES
        if size > self.max_bytes:
            return
        key = (article_id, full)
        with self._lock:
            if generation != self._generation:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (owner, reply, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def evict(self, article_ids: list[str]) -> None:
        """Forget these articles (changed, deleted), in both views."""
        with self._lock:
            self._generation += 1
            for article_id in article_ids:
                for full in (False, True):
                    old = self._entries.pop((article_id, full), None)
                    if old is not None:
                        self._bytes -= old[2]

    def evict_owner(self, user_id: str) -> None:
        """Forget every article of `user_id` (the user was purged)."""
        with self._lock:
            self._generation += 1
            for key in [k for k, (owner, _, _) in self._entries.items() if owner == user_id]:
                self._bytes -= self._entries.pop(key)[2]

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = 0

    def _on_change(self, payload: dict[str, Any]) -> None:
        ids = payload.get("ids")
        if payload.get("all") or not isinstance(ids, list):  # anything else: forget all
            self.clear()
        else:
            self.evict([str(i) for i in ids])

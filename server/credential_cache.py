"""Bearer credentials resolved in memory: a bounded, TTL'd cache and batched usage counts.

Only live credentials are cached (a negative answer is never kept: random tokens cannot fill
or flush the cache). An entry is dropped when its TTL or the credential's own expire_time
passes, when this process changes the user's credentials (evict_user, after the commit), and
when any process or command does (migration 0019's triggers NOTIFY `blogstore_credentials`
from the same transaction; storage/notify.py delivers it). Without the LISTEN connection the
cache is bypassed, and it is emptied when that connection comes back: never stale.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.background import Background
from storage.notify import ChangeListener

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "blogstore_credentials"  # migration 0019's triggers
FLUSH_SECONDS = 1.0  # usage counts reach the database at most this late


@dataclass(frozen=True, slots=True)
class Resolved:
    """A live credential: which row (for the usage counts) and whose it is."""

    table: str  # api_keys or sessions (access tokens)
    id: uuid.UUID
    secret_hash: bytes
    user_id: uuid.UUID
    is_admin: bool
    expire_time: dt.datetime | None


class CredentialCache:
    """digest -> Resolved, least recently used first out, at most `size` entries.

    A lookup that started before an invalidation does not fill (the generation moved), so a
    row read just before a revocation's commit cannot outlive its NOTIFY.
    """

    def __init__(self, size: int, ttl_seconds: float, listener: ChangeListener | None) -> None:
        self.size = size if ttl_seconds > 0 and listener is not None else 0
        self.ttl = ttl_seconds
        self._listener = listener
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[Resolved, float]] = OrderedDict()
        self._generation = 0
        if listener is not None and self.size:
            listener.subscribe(NOTIFY_CHANNEL, self._on_change, self.clear)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def usable(self) -> bool:
        """On, and the LISTEN connection is up (else every call goes to the database)."""
        return self.size > 0 and self._listener is not None and self._listener.connected.is_set()

    def get(self, token_digest: bytes) -> tuple[Resolved | None, int]:
        """The cached credential (or None) and the generation a miss's fill must quote."""
        if not self.usable:
            return None, -1
        with self._lock:
            found = self._entries.get(token_digest)
            if found is not None:
                if found[1] > time.monotonic():
                    self._entries.move_to_end(token_digest)
                    return found[0], self._generation
                del self._entries[token_digest]
            return None, self._generation

    def put(self, token_digest: bytes, resolved: Resolved, generation: int) -> None:
        """Keep `resolved` until the TTL or its expire_time, if nothing changed meanwhile."""
        if generation < 0 or not self.usable:
            return
        until = time.monotonic() + self.ttl
        if resolved.expire_time is not None:
            left = (resolved.expire_time - dt.datetime.now(dt.UTC)).total_seconds()
            until = min(until, time.monotonic() + left)
        with self._lock:
            if generation != self._generation:
                return
            self._entries[token_digest] = (resolved, until)
            self._entries.move_to_end(token_digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def evict_user(self, user_id: uuid.UUID) -> None:
        """Forget every credential of `user_id` (revoked, deactivated, new password...)."""
        with self._lock:
            self._generation += 1
            stale = [k for k, (r, _) in self._entries.items() if r.user_id == user_id]
            for key in stale:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def _on_change(self, payload: dict[str, Any]) -> None:
        self.evict_user(uuid.UUID(payload["user_id"]))


class UsageCounts(Background):
    """last_used_time / usage_count, gathered in memory and written in one statement.

    A daemon thread flushes every FLUSH_SECONDS; flush() also runs on demand (before reading
    the counts back on this process) and at shutdown. A failed write keeps the counts for the
    next flush.
    """

    def __init__(self, write: Callable[[list[tuple[str, uuid.UUID, int, dt.datetime]]], None]):
        self._write = write
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pending: dict[tuple[str, uuid.UUID], tuple[int, dt.datetime]] = {}
        super().__init__("usage-counts")
        self._failing = False  # the last write failed (logged once until one succeeds)

    def add(self, resolved: Resolved) -> None:
        key = (resolved.table, resolved.id)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            count, _ = self._pending.get(key, (0, now))
            self._pending[key] = (count + 1, now)

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                self._write([(t, i, n, last) for (t, i), (n, last) in pending.items()])
                self._failing = False
            except Exception as error:  # noqa: BLE001 - the database may be down or read-only
                if not self._failing:  # once per outage, no traceback: not a bug
                    log.warning("writing credential usage counts failed (%s); will retry",
                                type(error).__name__)  # fmt: skip
                self._failing = True
                with self._lock:
                    for key, (count, last) in pending.items():
                        more, later = self._pending.get(key, (0, last))
                        self._pending[key] = (count + more, max(last, later))

    def stop(self) -> None:
        super().stop()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

"""Fair shares: per-principal caps on the process's shared resources.

A principal is a user (or admin) by id, a service by name, or "anonymous" (every caller
without credentials shares that one). Each resource (request threads, batch slots, watch
streams) has a process-wide limit elsewhere; the share caps what one principal may hold of
it, so one tenant filling it leaves the others theirs. Beyond a share: ShareExceeded
(RESOURCE_EXHAUSTED with a QuotaFailure naming the setting), at once, never a wait.

Services are trusted workers (crawlers, the web API that fronts every login), so they get a
larger call share of their own (BLOGSTORE_MAX_CALLS_PER_SERVICE, default three quarters of
the threads), which still leaves users a quarter of the threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from server.config import Settings, variable_name
from storage.actors import Actor, ActorKind
from storage.errors import ShareExceeded


def principal_key(actor: Actor) -> str:
    if actor.kind in (ActorKind.USER, ActorKind.ADMIN):
        return f"user:{actor.user_id}"
    if actor.kind is ActorKind.ANONYMOUS:
        return "anonymous"
    return f"{actor.kind.value}:{actor.name}"


class FairShare:
    """Counts what each principal holds of one resource; take() refuses beyond its share."""

    def __init__(self, noun: str, limit: Callable[[Actor], tuple[int, str]]):
        self.noun = noun
        self._limit = limit  # actor -> (its share, the setting that sets it)
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, actor: Actor) -> None:
        """Count one more for `actor`; release(actor) exactly once for each take()."""
        key = principal_key(actor)
        share, setting = self._limit(actor)
        with self._lock:
            held = self._held.get(key, 0)
            if held >= share:
                raise ShareExceeded(
                    f"this principal already has {held} {self.noun} on this server, its share",
                    {variable_name(setting): f"at most {share} {self.noun} per principal"},
                )
            self._held[key] = held + 1

    def release(self, actor: Actor) -> None:
        key = principal_key(actor)
        with self._lock:
            held = self._held.get(key, 0) - 1
            if held > 0:
                self._held[key] = held
            else:
                self._held.pop(key, None)

    def held(self, actor: Actor) -> int:
        with self._lock:
            return self._held.get(principal_key(actor), 0)

    @contextlib.contextmanager
    def holding(self, actor: Actor) -> Iterator[None]:
        self.take(actor)
        try:
            yield
        finally:
            self.release(actor)


@dataclass(frozen=True)
class Shares:
    calls: FairShare
    batches: FairShare
    watchers: FairShare

    @classmethod
    def from_settings(cls, settings: Settings) -> Shares:
        def calls(actor: Actor) -> tuple[int, str]:
            if actor.kind is ActorKind.SERVICE:
                return settings.calls_per_service, "max_calls_per_service"
            return settings.calls_per_principal, "max_calls_per_principal"

        def fixed(share: int, setting: str) -> Callable[[Actor], tuple[int, str]]:
            return lambda _actor: (share, setting)

        return cls(
            calls=FairShare("calls in flight", calls),
            batches=FairShare(
                "batch imports running",
                fixed(settings.max_batches_per_principal, "max_batches_per_principal"),
            ),
            watchers=FairShare(
                "open watch streams",
                fixed(settings.watchers_per_principal, "max_watchers_per_principal"),
            ),
        )


class CallSlot:
    """The interceptor's hook: one call's share of the request threads, released once."""

    __slots__ = ("_share", "_actor")

    def __init__(self, share: FairShare | None = None, actor: Actor | None = None) -> None:
        self._share, self._actor = share, actor
        if share is not None and actor is not None:
            share.take(actor)

    def release(self) -> None:
        share, actor = self._share, self._actor
        self._share = None
        if share is not None and actor is not None:
            share.release(actor)

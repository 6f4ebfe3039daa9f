"""Fair shares: per-principal caps on the process's shared resources.

A principal is a user (or admin) by id, a service by name, or "anonymous" (every caller
without credentials shares that one). Each resource (request threads, batch slots, watch
streams) has a process-wide limit elsewhere; the share caps what one principal may hold of
it, so one tenant filling it leaves the others theirs. Beyond a share: ShareExceeded
(RESOURCE_EXHAUSTED with a QuotaFailure naming the setting).

Calls: the gRPC pool has BLOGSTORE_THREADS request threads plus as many again that only
wait. A call over its principal's share waits there up to WAIT_SECONDS (or its deadline)
for one of that principal's own calls to end, then is refused; a call within its share waits
for a request thread as it would in gRPC's queue. Waiting costs no CPU, and a client that
sends again at once after a refusal (a login flood) cannot turn refusals into a busy loop
that takes the server's CPU (and GIL) from everyone else.

Services are trusted workers (crawlers, the web API that fronts every login), so they get a
larger call share of their own (BLOGSTORE_MAX_CALLS_PER_SERVICE, default three quarters of
the threads), which still leaves users a quarter of the threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from server.config import Settings, variable_name
from storage.actors import Actor, ActorKind
from storage.errors import DeadlineExceeded, ShareExceeded

WAIT_SECONDS = 1.0  # the longest a call over its share waits for one of its own to end


def principal_key(actor: Actor) -> str:
    if actor.kind in (ActorKind.USER, ActorKind.ADMIN):
        return f"user:{actor.user_id}"
    if actor.kind is ActorKind.ANONYMOUS:
        return "anonymous"
    return f"{actor.kind.value}:{actor.name}"


def _remaining(deadline: float | None, cap: float | None = None) -> float | None:
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if cap is None:
        return left
    return cap if left is None else min(cap, left)


class FairShare:
    """Counts what each principal holds of one resource; take() refuses beyond its share.

    `waiting_room`: how many calls (of all principals) may wait for their share at once;
    `gate`: the process-wide slots (request threads) a call takes once within its share.
    """

    def __init__(
        self,
        noun: str,
        limit: Callable[[Actor], tuple[int, str]],
        *,
        waiting_room: threading.BoundedSemaphore | None = None,
        gate: threading.BoundedSemaphore | None = None,
    ) -> None:
        self.noun = noun
        self._limit = limit  # actor -> (its share, the setting that sets it)
        self._held: dict[str, int] = {}
        self._changed = threading.Condition()
        self._waiting_room = waiting_room
        self._gate = gate

    def take(self, actor: Actor, deadline: float | None = None) -> None:
        """Count one more for `actor`; release(actor) exactly once for each take()."""
        key = principal_key(actor)
        share, setting = self._limit(actor)
        if not self._take_share(key, share, deadline):
            raise ShareExceeded(
                f"this principal already has its share of {self.noun} on this server",
                {variable_name(setting): f"at most {share} {self.noun} per principal"},
            )
        if self._gate is not None and not self._gate.acquire(timeout=_remaining(deadline)):
            self._give_back(key)
            raise DeadlineExceeded("the call's deadline passed while it waited for a thread")

    def try_take(self, actor: Actor) -> bool:
        """take() without waiting: False when `actor` holds its share or no slot is free."""
        key = principal_key(actor)
        share, _ = self._limit(actor)
        with self._changed:
            if self._held.get(key, 0) >= share:
                return False
            self._held[key] = self._held.get(key, 0) + 1
        if self._gate is not None and not self._gate.acquire(blocking=False):
            self._give_back(key)
            return False
        return True

    def _take_share(self, key: str, share: int, deadline: float | None) -> bool:
        with self._changed:
            if self._held.get(key, 0) < share:
                self._held[key] = self._held.get(key, 0) + 1
                return True
        room = self._waiting_room
        if room is None or not room.acquire(blocking=False):
            return False
        try:
            end = time.monotonic() + (_remaining(deadline, WAIT_SECONDS) or 0.0)
            with self._changed:
                while self._held.get(key, 0) >= share:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._changed.wait(left)
                self._held[key] = self._held.get(key, 0) + 1
                return True
        finally:
            room.release()

    def release(self, actor: Actor) -> None:
        if self._gate is not None:
            self._gate.release()
        self._give_back(principal_key(actor))

    def _give_back(self, key: str) -> None:
        with self._changed:
            held = self._held.get(key, 0) - 1
            if held > 0:
                self._held[key] = held
            else:
                self._held.pop(key, None)
            self._changed.notify_all()

    def held(self, actor: Actor) -> int:
        with self._changed:
            return self._held.get(principal_key(actor), 0)

    @contextlib.contextmanager
    def holding(self, actor: Actor, deadline: float | None = None) -> Iterator[None]:
        self.take(actor, deadline)
        try:
            yield
        finally:
            self.release(actor)


@dataclass(frozen=True)
class Shares:
    calls: FairShare
    batches: FairShare
    watchers: FairShare
    pool_threads: int  # the gRPC pool: request threads, and as many that only wait

    @classmethod
    def from_settings(cls, settings: Settings) -> Shares:
        def calls(actor: Actor) -> tuple[int, str]:
            if actor.kind is ActorKind.SERVICE:
                return settings.calls_per_service, "max_calls_per_service"
            return settings.calls_per_principal, "max_calls_per_principal"

        def fixed(share: int, setting: str) -> Callable[[Actor], tuple[int, str]]:
            return lambda _actor: (share, setting)

        waiting = settings.threads
        return cls(
            calls=FairShare(
                "calls in flight",
                calls,
                waiting_room=threading.BoundedSemaphore(waiting),
                gate=threading.BoundedSemaphore(settings.threads),
            ),
            batches=FairShare(
                "batch imports running",
                fixed(settings.max_batches_per_principal, "max_batches_per_principal"),
            ),
            watchers=FairShare(
                "open watch streams",
                fixed(settings.watchers_per_principal, "max_watchers_per_principal"),
            ),
            pool_threads=settings.threads + waiting,
        )

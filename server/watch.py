"""WatchPipeline fan-out: one LISTEN connection per process, no thread held per watcher.

Watch streams are grpcio "non-blocking" handlers: the handler registers a watcher and returns
at once, so watchers never occupy request workers. The hub's listener receives every
committed pipeline change (trigger -> NOTIFY, carrying the row when it fits) and a small
delivery pool sends it to that pipeline's watchers, in version order, one watcher at a time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from server.errors import to_status
from server.fairness import FairShare
from storage.actors import Caller
from storage.errors import DomainError, QuotaExceeded, Unavailable
from storage.models import Pipeline
from storage.models.pipelines import NOTIFY_CHANNEL
from storage.notify import ChangeListener
from storage.repositories.pipelines import TERMINAL_STATES, pipeline_from_row
from storage.uow import Database

log = logging.getLogger(__name__)

LISTENER_WAIT_SECONDS = 2.0


@dataclass(eq=False)
class Watcher:
    pipeline_id: uuid.UUID
    caller: Caller
    context: grpc.ServicerContext
    send: Callable[[Any], None]
    last_version: int = 0
    pending: deque[Pipeline | None] = field(default_factory=deque)  # None: re-read it
    draining: bool = False
    closed: bool = False


class WatchHub:
    def __init__(
        self,
        db: Database,
        listener: ChangeListener,
        *,
        max_watchers: int,
        to_message: Callable[[Pipeline], Any],
        shares: FairShare | None = None,
    ) -> None:
        self.db = db
        self.max_watchers = max_watchers
        self.shares = shares  # each principal's share of max_watchers (server/fairness.py)
        self.to_message = to_message
        self._lock = threading.Lock()
        self._watchers: dict[uuid.UUID, set[Watcher]] = {}
        self._count = 0
        self._deliveries = ThreadPoolExecutor(max_workers=4, thread_name_prefix="watch")
        self._listener = listener  # shared: started and stopped by server/app.py
        listener.subscribe(NOTIFY_CHANNEL, self._on_change, self._on_reconnect)

    @property
    def open_watchers(self) -> int:
        return self._count

    def stop(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect elsewhere)."""
        with self._lock:
            watchers = [w for group in self._watchers.values() for w in group]
        for watcher in watchers:
            self._finish(watcher, Unavailable("the server is shutting down"))
        self._deliveries.shutdown(wait=True, cancel_futures=True)

    def open(self, caller: Caller, pipeline_id: uuid.UUID, context: Any, send: Any) -> None:
        """Register a watcher, then send the current state; errors raise before anything is sent."""
        watcher = Watcher(pipeline_id, caller, context, send)
        with self._lock:
            if self._count >= self.max_watchers:
                raise QuotaExceeded(
                    "too many open watch streams on this server",
                    {"watchers": f"at most {self.max_watchers} per process"},
                )
            if self.shares is not None:
                self.shares.take(caller.actor)  # released by _unregister
            self._watchers.setdefault(pipeline_id, set()).add(watcher)
            self._count += 1
        # Registered before the first read, so no change can slip between the two.
        context.add_callback(lambda: self._unregister(watcher))
        try:
            current = self.db.run(caller, lambda tx: tx.pipelines.get(pipeline_id))
            self._require_listener(caller)
        except Exception:
            self._unregister(watcher)
            raise
        self._enqueue(watcher, current)

    def _require_listener(self, caller: Caller) -> None:
        """A watch without the LISTEN connection would see no changes: UNAVAILABLE instead.

        Waits briefly, since the listener connects in the background at start-up and after a
        drop.
        """
        remaining = None if caller.deadline is None else caller.deadline - time.monotonic()
        wait = LISTENER_WAIT_SECONDS if remaining is None else min(LISTENER_WAIT_SECONDS, remaining)
        if not self._listener.connected.wait(max(wait, 0)):
            raise Unavailable("change notifications are not connected to the database")

    def _on_change(self, payload: dict[str, Any]) -> None:
        pipeline_id = uuid.UUID(payload["id"])
        with self._lock:
            watchers = list(self._watchers.get(pipeline_id, ()))
        if not watchers:
            return
        pipeline = pipeline_from_row(payload) if "state" in payload else None
        for watcher in watchers:
            self._enqueue(watcher, pipeline)

    def _on_reconnect(self) -> None:
        with self._lock:
            watchers = [w for group in self._watchers.values() for w in group]
        for watcher in watchers:
            self._enqueue(watcher, None)

    def _enqueue(self, watcher: Watcher, pipeline: Pipeline | None) -> None:
        with self._lock:
            if watcher.closed:
                return
            watcher.pending.append(pipeline)
            if watcher.draining:
                return
            watcher.draining = True
        self._deliveries.submit(self._drain, watcher)

    def _drain(self, watcher: Watcher) -> None:
        while True:
            with self._lock:
                if watcher.closed or not watcher.pending:
                    watcher.draining = False
                    return
                pipeline = watcher.pending.popleft()
            try:
                if pipeline is None:
                    pipeline = self.db.run(
                        watcher.caller, lambda tx: tx.pipelines.get(watcher.pipeline_id)
                    )
                if pipeline.version <= watcher.last_version:
                    continue
                watcher.last_version = pipeline.version
                watcher.send(self.to_message(pipeline))
                if pipeline.state in TERMINAL_STATES:
                    self._finish(watcher)
            except DomainError as error:
                self._finish(watcher, error)
            except Exception:
                log.exception("watch delivery failed for pipeline %s", watcher.pipeline_id)
                self._finish(watcher, Unavailable("watch delivery failed; watch again"))

    def _finish(self, watcher: Watcher, error: DomainError | None = None) -> None:
        """End the stream: OK after a terminal state, else the error's status."""
        if not self._unregister(watcher):
            return
        if error is not None:
            status = to_status(error, watcher.caller.request_id)
            watcher.context.set_code(status.code)
            watcher.context.set_details(status.details)
            watcher.context.set_trailing_metadata(status.trailing_metadata)
        watcher.send(None)

    def _unregister(self, watcher: Watcher) -> bool:
        """Free the watcher's slot; True only for the first call."""
        with self._lock:
            if watcher.closed:
                return False
            watcher.closed = True
            group = self._watchers.get(watcher.pipeline_id)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._watchers[watcher.pipeline_id]
            self._count -= 1
            if self.shares is not None:
                self.shares.release(watcher.caller.actor)
            return True

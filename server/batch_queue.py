"""Admission of BatchCreateArticles calls, before their body is read.

A 1000-article request is ~10 MB on the wire and about as much again decoded. At most
BLOGSTORE_MAX_CONCURRENT_BATCHES batches run at once per process; the others wait for a slot.
grpcio starts the handler when the metadata arrives, and the request interceptor reads the
body only when asked (server/decoding.py), so a call waits for its principal's share and a
slot here, entered before the read (RequestInterceptor.admit): a waiting call holds no request
of its own, only what the transport buffered under HTTP/2 flow control, and the client is
held back from sending the rest. (Waiting after the read, eight calls in flight held ~6 x 10 MB
more than the two running ones: BENCHMARKS.md "Issue 17: a continuous import under 200 MB".)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from server.fairness import FairShare
from storage.actors import Caller
from storage.errors import Unavailable

WAIT_SECONDS = 60.0  # the longest a batch waits for a slot (or its deadline, if sooner)


class BatchAdmission:
    def __init__(self, slots: threading.BoundedSemaphore, shares: FairShare) -> None:
        self._slots = slots  # telemetry's semaphore counts the slots in use
        self._shares = shares  # each principal's share of them, counted while it waits too

    @contextlib.contextmanager
    def __call__(self, caller: Caller) -> Iterator[None]:
        with self._shares.holding(caller.actor):
            wait = WAIT_SECONDS
            if caller.deadline is not None:
                wait = max(0.0, min(wait, caller.deadline - time.monotonic()))
            if not self._slots.acquire(timeout=wait):
                raise Unavailable("too many batch imports in progress on this server; retry")
            try:
                yield
            finally:
                self._slots.release()

"""A call's deadline, enforced on our side of the connection, whatever the database does.

`statement_timeout` only helps while the server answers. A server that accepts bytes and never
replies (a stuck disk, a frozen proxy) would pin the request thread in libpq's recv for as long
as the kernel keeps the socket (tcp_user_timeout does not fire while the peer ACKs). So each
unit of work runs under a `Budget` (a contextvar set by storage/uow.py), and every engine from
storage/engine.py honours it:

- the pool wait is at most the remaining budget (`ObservedQueuePool._timeout`);
- a new connection gets `connect_timeout` = the remaining budget in whole seconds (nearest,
  at least 1, at most the configured one; libpq >= 17 counts it precisely, minimum 1 s);
- a checked-out connection is registered with the one `Watchdog` thread. At the deadline +
  GRACE_SECONDS with the connection still out, it sends a cancel request (PQcancel, on a
  throwaway thread: against a hung server the cancel itself hangs), and SHUTDOWN_AFTER_SECONDS
  later shuts the libpq socket down so the blocked recv returns. The request thread gets a
  connection error, and the connection is discarded at check-in, never pooled again.

PQcancel is called through ctypes on psycopg2's own libpq, not as `connection.cancel()`:
psycopg2 holds the GIL during PQcancel, so a cancel request to a hung server would freeze the
whole process. ctypes releases the GIL for the call.

Registering is a heap push under a lock, and the watchdog thread only wakes when an entry falls
due, so the hot path pays microseconds and no thread per call.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GRACE_SECONDS = 0.3  # the server's own statement_timeout answers first when it can
SHUTDOWN_AFTER_SECONDS = 0.3  # after the cancel request, before the socket is shut down
MAX_CANCEL_THREADS = 8  # cancel requests to a hung server pile up no further than this
MAX_WAIT = 3600.0  # seconds the watchdog sleeps at most: below threading.TIMEOUT_MAX


@dataclass(eq=False)
class Budget:
    """One call's time budget: `deadline` is a time.monotonic() value."""

    deadline: float
    fired: bool = False  # the watchdog had to cut one of this call's connections

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_current: ContextVar[Budget | None] = ContextVar("blogstore_budget", default=None)


def current() -> Budget | None:
    return _current.get()


@contextlib.contextmanager
def budget(deadline: float) -> Any:
    """Run the body under a budget ending at `deadline` (time.monotonic())."""
    token = enter(deadline)
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def enter(deadline: float) -> Any:
    """budget() without the generator, for the per-call path: the token to reset() after."""
    return _current.set(Budget(deadline))


def reset(token: Any) -> None:
    _current.reset(token)


def connect_timeout(configured: int) -> int:
    """libpq's connect_timeout for a connection opened now: never past the budget.

    Raises psycopg2's OperationalError (UNAVAILABLE, or DEADLINE_EXCEEDED once the watchdog
    fired) when the budget is spent: e.g. the reconnect after a pre-ping the watchdog cut.
    """
    spent = _current.get()
    if spent is None:
        return configured
    remaining = spent.remaining()
    if remaining < 0.05:
        import psycopg2

        raise psycopg2.OperationalError("no time left in the call's deadline to connect")
    return max(1, min(configured, round(remaining)))  # whole seconds, nearest


def pool_timeout(configured: float) -> float:
    """How long a checkout may wait for a pooled connection now."""
    spent = _current.get()
    if spent is None:
        return configured
    return max(0.001, min(configured, spent.remaining()))


@functools.cache
def _libpq() -> Any:
    """psycopg2's own libpq (the one loaded in this process), or None where it is not found."""
    import psycopg2  # noqa: F401 - loads it

    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libpq" in path and ".so" in path:
                lib = ctypes.CDLL(path)
                lib.PQgetCancel.restype = ctypes.c_void_p
                lib.PQgetCancel.argtypes = [ctypes.c_void_p]
                lib.PQcancel.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
                lib.PQfreeCancel.argtypes = [ctypes.c_void_p]
                return lib
    log.warning("libpq not found: calls past their deadline are cut without a cancel request")
    return None


def _send_cancel(libpq: Any, cancel: int) -> None:
    """PQcancel with the GIL released; may block as long as a hung server does."""
    try:
        libpq.PQcancel(cancel, ctypes.create_string_buffer(256), 256)
    finally:
        libpq.PQfreeCancel(cancel)


@dataclass(eq=False)
class _Entry:
    budget: Budget
    connection: Any  # the psycopg2 connection
    fd: int
    done: bool = False
    cancelled: bool = False  # stage 1 done: the cancel request is on its way


class Watchdog:
    """One thread that cuts connections whose call's deadline passed with no answer."""

    def __init__(
        self, grace: float = GRACE_SECONDS, shutdown_after: float = SHUTDOWN_AFTER_SECONDS
    ) -> None:
        self.grace = grace
        self.shutdown_after = shutdown_after
        self._due = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Entry]] = []
        self._next_wake = math.inf
        self._live = 0
        self._seq = itertools.count()
        self._cancels = threading.BoundedSemaphore(MAX_CANCEL_THREADS)
        self._thread: threading.Thread | None = None
        self.fired = 0  # connections cut, for tests and logs

    def watch(self, spent: Budget, connection: Any) -> _Entry:
        entry = _Entry(spent, connection, connection.fileno())
        self._push(spent.deadline + self.grace, entry)
        return entry

    def release(self, entry: _Entry) -> None:
        with self._due:
            if not entry.done:
                entry.done = True
                self._live -= 1

    def _push(self, at: float, entry: _Entry, *, again: bool = False) -> None:
        with self._due:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="db-deadline-watchdog", daemon=True
                )
                self._thread.start()
            if not again:
                self._live += 1
            heapq.heappush(self._heap, (at, next(self._seq), entry))
            if len(self._heap) > 256 and len(self._heap) > 4 * self._live:
                self._heap = [item for item in self._heap if not item[2].done]
                heapq.heapify(self._heap)
            if at < self._next_wake:
                self._due.notify()

    def _run(self) -> None:
        while True:
            with self._due:
                entry = self._next_due()
            try:
                self._act(entry)
            except Exception:  # the watchdog must outlive any one entry
                log.exception("deadline watchdog: cutting a connection failed")

    def _next_due(self) -> _Entry:
        """Wait (lock held by the caller) for the next entry that falls due and is still out."""
        while True:
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                self._next_wake = math.inf
                return heapq.heappop(self._heap)[2]
            self._next_wake = self._heap[0][0] if self._heap else math.inf
            # Capped: a far deadline (a client's, or a long statement timeout) would overflow
            # the lock's timeout and kill this thread; it just wakes up and waits again.
            self._due.wait(None if not self._heap else min(self._next_wake - now, MAX_WAIT))

    def _act(self, entry: _Entry) -> None:
        if not entry.cancelled:
            entry.cancelled = True
            entry.budget.fired = True
            self.fired += 1
            log.warning("database call past its deadline with no answer: cancelling it")
            self._cancel(entry)
            self._push(time.monotonic() + self.shutdown_after, entry, again=True)
            return
        with self._due:  # release() waits: the fd cannot be closed and reused meanwhile
            if entry.done or entry.connection.closed:
                return
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(entry.fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

    def _cancel(self, entry: _Entry) -> None:
        """Send a cancel request on a throwaway thread (best effort: the socket is cut next)."""
        libpq = _libpq()
        if libpq is None or not self._cancels.acquire(blocking=False):
            return
        with self._due:  # the connection cannot be closed meanwhile (see release)
            alive = not entry.done and not entry.connection.closed
            cancel = libpq.PQgetCancel(entry.connection.pgconn_ptr) if alive else None
        if not cancel:
            self._cancels.release()
            return

        def send() -> None:
            try:
                _send_cancel(libpq, cancel)
            finally:
                self._cancels.release()

        threading.Thread(target=send, name="db-cancel", daemon=True).start()


WATCHDOG = Watchdog()


def install(engine: Any, configured_connect_timeout: int) -> None:
    """Make `engine` honour the current budget: connect timeout, and the watchdog per checkout.

    Must be installed before any other checkout listener (the idle pre-ping is a round trip
    that can hang too).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def _connect_timeout(dialect: Any, record: Any, cargs: Any, cparams: dict) -> None:
        cparams["connect_timeout"] = connect_timeout(configured_connect_timeout)

    @event.listens_for(engine, "checkout")
    def _watch(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        spent = _current.get()
        if spent is not None:
            record.info["deadline_watch"] = WATCHDOG.watch(spent, dbapi_connection)

    @event.listens_for(engine, "checkin")
    def _unwatch(dbapi_connection: Any, record: Any) -> None:
        entry = record.info.pop("deadline_watch", None)
        if entry is None:
            return
        WATCHDOG.release(entry)
        if entry.cancelled and record.dbapi_connection is not None:
            record.invalidate()  # cancelled or cut: never hand it out again

    @event.listens_for(engine, "invalidate")
    def _invalidated(dbapi_connection: Any, record: Any, exception: Any) -> None:
        entry = record.info.pop("deadline_watch", None)
        if entry is not None:
            WATCHDOG.release(entry)

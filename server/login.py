"""Login protections: bcrypt on a bounded pool of its own, and the forwarded end-user address.

bcrypt is CPU by design (about a quarter second at cost 12). Run on the request threads, a
login flood took every core from every other call; here at most BLOGSTORE_BCRYPT_THREADS
hashes run at once, and a call that cannot get a turn within WAIT_SECONDS (or its deadline)
is UNAVAILABLE with a RetryInfo instead of piling up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from server.config import Settings
from storage import credentials
from storage.actors import Actor, ActorKind
from storage.errors import InvalidArgument, Unavailable
from storage.throttle import LoginThrottle
from storage.uow import Database

T = TypeVar("T")
WAIT_SECONDS = 10.0  # the longest a password check waits for a turn on the pool
FORWARDED_FOR = "x-forwarded-for"
BCRYPT_NICE = 10  # the bcrypt threads' nice value (request threads keep theirs)
IPV6_PREFIX = 64  # one end user (one home or phone) holds a whole /64


class PasswordHasher:
    def __init__(self, threads: int, rounds: int) -> None:
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        self._turns = threading.BoundedSemaphore(threads)  # one per pool thread: no queue

    def hash(self, password: str, deadline: float | None) -> str:
        return self._run(deadline, credentials.hash_password, password, self.rounds)

    def verify(self, password: str, password_hash: str | None, deadline: float | None) -> bool:
        """With no hash (an unknown user) the same bcrypt time is spent, as for a miss."""
        return self._run(
            deadline, credentials.verify_password, password, password_hash, self.rounds
        )

    def _run(self, deadline: float | None, work: Callable[..., T], *args: Any) -> T:
        wait = WAIT_SECONDS if deadline is None else min(WAIT_SECONDS, deadline - time.monotonic())
        if not self._turns.acquire(timeout=max(0.0, wait)):
            raise Unavailable("too many password checks in progress on this server; retry")
        try:
            future = self._pool.submit(work, *args)
        except RuntimeError:  # shut down
            self._turns.release()
            raise Unavailable("the server is shutting down") from None
        future.add_done_callback(lambda _: self._turns.release())
        return future.result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    """On Linux, nice applies per thread: under contention the request threads (and the
    database) get the CPU first; when the machine is idle bcrypt runs at full speed."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_NICE)


def login_throttle(db: Database, settings: Settings) -> LoginThrottle:
    return LoginThrottle(
        db,
        max_failures=settings.login_max_failures,
        max_failures_per_address=settings.login_max_failures_per_address,
        backoff_seconds=settings.login_backoff_seconds,
        backoff_max_seconds=settings.login_backoff_max_seconds,
    )


def forwarded_address(metadata: Any, actor: Actor) -> str | None:
    """The end user's address a service forwards (`x-forwarded-for`, its last entry: the one
    the service itself added), as an IPv4 address or IPv6 /64; None from anyone else, whose
    header anybody could write."""
    if actor.kind is not ActorKind.SERVICE:
        return None
    values = [value for key, value in metadata or () if key == FORWARDED_FOR]
    if not values:
        return None
    entry = values[-1].rpartition(",")[2].strip()
    try:
        address = ipaddress.ip_address(_without_port(entry))
    except ValueError:
        raise InvalidArgument({FORWARDED_FOR: "must end with an IP address"}) from None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


def _without_port(entry: str) -> str:
    if entry.startswith("["):  # [2001:db8::1]:443
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:  # 192.0.2.1:443
        return entry.partition(":")[0]
    return entry

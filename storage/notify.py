"""One LISTEN connection per process, turning PostgreSQL notifications into callbacks.

Every channel a process follows (pipelines for WatchHub, credentials for the credential
cache) shares that one connection: server/app.py makes it and hands it to each subscriber.
"""

from __future__ import annotations

import json
import logging
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

from storage.background import Background
from storage.engine import libpq_dsn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscriber:
    on_change: Callable[[dict[str, Any]], None]
    on_reconnect: Callable[[], None]


class ChangeListener(Background):
    """One connection LISTENing on every subscribed channel, in a daemon thread; reconnects
    with backoff when the link drops.

    Each channel's `on_change` gets its payloads (parsed JSON). `on_reconnect` runs after a
    reconnect, before `connected` is set again, since notifications sent while disconnected
    are lost and subscribers must re-read (or forget) what they follow.
    """

    def __init__(self, database_url: str, *, poll_seconds: float = 1.0) -> None:
        self._dsn = libpq_dsn(database_url)
        self.poll_seconds = poll_seconds
        self._subscribers: dict[str, list[Subscriber]] = {}
        super().__init__("listen")
        self.connected = threading.Event()

    def subscribe(
        self,
        channel: str,
        on_change: Callable[[dict[str, Any]], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        """Before start(): deliver `channel`'s notifications to `on_change`."""
        if not channel.isidentifier():
            raise ValueError("channel must be a plain identifier")
        if self._thread.is_alive():
            raise RuntimeError("subscribe before start()")
        self._subscribers.setdefault(channel, []).append(Subscriber(on_change, on_reconnect))

    def _run(self) -> None:
        backoff, first = 0.5, True
        while not self._stop.is_set():
            try:
                connection = psycopg2.connect(
                    self._dsn, connect_timeout=5, keepalives=1, keepalives_idle=30,
                    keepalives_interval=10, keepalives_count=3,
                    application_name="blogstore-listen",
                )  # fmt: skip
            except psycopg2.Error as error:
                log.warning("LISTEN connection failed (%s); retrying", type(error).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    for channel in self._subscribers:
                        cursor.execute(f"LISTEN {channel}")
                if not first:
                    for subscriber in self._all():
                        subscriber.on_reconnect()
                self.connected.set()
                first, backoff = False, 0.5
                self._listen(connection)
            except (psycopg2.Error, OSError) as error:
                log.warning("LISTEN connection lost (%s); reconnecting", type(error).__name__)
            finally:
                self.connected.clear()
                connection.close()

    def _all(self) -> list[Subscriber]:
        return [s for group in self._subscribers.values() for s in group]

    def _listen(self, connection: Any) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([connection], [], [], self.poll_seconds)
            if not ready:
                continue
            connection.poll()
            while connection.notifies:
                notification = connection.notifies.pop(0)
                for subscriber in self._subscribers.get(notification.channel, ()):
                    try:
                        subscriber.on_change(json.loads(notification.payload))
                    except Exception:  # one bad delivery must not stop listening
                        log.exception("change handler failed")

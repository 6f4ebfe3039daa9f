"""One LISTEN connection per process, turning PostgreSQL notifications into callbacks."""

from __future__ import annotations

import json
import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import psycopg2

from storage.engine import libpq_dsn

log = logging.getLogger(__name__)


class ChangeListener:
    """Listens on `channel` in a daemon thread; reconnects with backoff when the link drops.

    `on_change` gets each payload (parsed JSON). `on_reconnect` runs after a reconnect, since
    notifications sent while disconnected are lost and listeners must re-read what they follow.
    """

    def __init__(
        self,
        database_url: str,
        channel: str,
        on_change: Callable[[dict[str, Any]], None],
        on_reconnect: Callable[[], None],
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        if not channel.isidentifier():
            raise ValueError("channel must be a plain identifier")
        self._dsn = libpq_dsn(database_url)
        self.channel = channel
        self.on_change = on_change
        self.on_reconnect = on_reconnect
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

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
                    cursor.execute(f"LISTEN {self.channel}")
                self.connected.set()
                if not first:
                    self.on_reconnect()
                first, backoff = False, 0.5
                self._listen(connection)
            except (psycopg2.Error, OSError) as error:
                log.warning("LISTEN connection lost (%s); reconnecting", type(error).__name__)
            finally:
                self.connected.clear()
                connection.close()

    def _listen(self, connection: Any) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([connection], [], [], self.poll_seconds)
            if not ready:
                continue
            connection.poll()
            while connection.notifies:
                notification = connection.notifies.pop(0)
                try:
                    self.on_change(json.loads(notification.payload))
                except Exception:  # one bad delivery must not stop listening
                    log.exception("change handler failed")

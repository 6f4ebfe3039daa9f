"""The ledgers' monthly partitions, created ahead by every server process (a daemon thread).

At start and then every CHECK_SECONDS: the current month and BLOGSTORE_PARTITIONS_AHEAD more,
and any month whose rows sit in a default partition (storage/lifecycle/partitions.py). Several
processes may race: one creates, the others find it there (or fail on the name and retry at
the next check). Runs as the login (the tables' owner, like `blogstore migrate`); a login
that may not create tables gets a warning, and `blogstore partitions` (cron) does it instead.
Nothing breaks meanwhile: writes land in the default partition.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import Engine

from storage.background import Background
from storage.lifecycle import partitions

log = logging.getLogger(__name__)
CHECK_SECONDS = 3600.0


class PartitionMaintainer(Background):
    def __init__(self, engine: Engine, ahead: int, interval: float = CHECK_SECONDS) -> None:
        self.engine = engine
        self.ahead = ahead
        self.interval = interval
        super().__init__("partitions")
        self._failing = False

    def run_once(self, now: dt.datetime | None = None) -> partitions.Ensured | None:
        """Create what is missing; None if it failed (logged once until it succeeds)."""
        try:
            with self.engine.connect() as connection:
                done = partitions.ensure(connection, now or dt.datetime.now(dt.UTC), self.ahead)
        except Exception as error:  # noqa: BLE001 - database down, or no right to CREATE
            if not self._failing:
                log.warning(
                    "creating the ledgers' monthly partitions failed (%s: %s); writes go to "
                    "the default partition until it works (or run `blogstore partitions` as "
                    "the tables' owner)", type(error).__name__, str(error).strip()[:200],
                )  # fmt: skip
            self._failing = True
            return None
        self._failing = False
        if done.created:
            log.info("created partitions %s (%d rows moved out of default partitions)",
                     ", ".join(done.created), done.moved)  # fmt: skip
        return done

    def _run(self) -> None:
        self.run_once()
        while not self._stop.wait(self.interval):
            self.run_once()

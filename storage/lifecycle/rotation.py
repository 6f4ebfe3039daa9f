"""Which backups to keep: grandfather-father-son buckets in UTC.

A backup is kept when it is the newest one of its hour within the last `hourly` hours, of its
day within the last `daily` days, or of its ISO week (Monday to Sunday) within the last
`weekly` weeks, counted from now and including the current hour, day and week. The newest
backup of all is always kept, however old. A tier of 0 keeps nothing by itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from storage.lifecycle.backup import Backup, list_backups, remove, stale_leftovers

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Policy:
    hourly: int = 48
    daily: int = 14
    weekly: int = 8


def _hour(t: dt.datetime) -> int:
    return int(t.timestamp() // 3600)


def _day(t: dt.datetime) -> int:
    return t.astimezone(dt.UTC).date().toordinal()


def _week(t: dt.datetime) -> int:
    return (_day(t) - 1) // 7  # toordinal() 1 is a Monday: ISO weeks start on Mondays


def keep(taken: Mapping[K, dt.datetime], policy: Policy, now: dt.datetime) -> set[K]:
    """The keys of the backups the policy keeps (times must be timezone-aware)."""
    if not taken:
        return set()
    kept = {max(taken, key=lambda k: taken[k])}
    tiers: list[tuple[Callable[[dt.datetime], int], int]] = [
        (_hour, policy.hourly),
        (_day, policy.daily),
        (_week, policy.weekly),
    ]
    for bucket_of, count in tiers:
        newest: dict[int, K] = {}
        for key, moment in taken.items():
            bucket = bucket_of(moment)
            if bucket_of(now) - bucket < count and (
                bucket not in newest or moment > taken[newest[bucket]]
            ):
                newest[bucket] = key
        kept.update(newest.values())
    return kept


def prune(
    directory: Path, policy: Policy, now: dt.datetime | None = None
) -> tuple[list[Backup], list[Path]]:
    """Remove the backups the policy does not keep, and dead partial files.

    Returns (removed backups, removed leftovers).
    """
    backups = list_backups(directory)
    by_name = {b.dump.name: b for b in backups}
    kept = keep(
        {name: b.manifest.started for name, b in by_name.items()},
        policy,
        now or dt.datetime.now(dt.UTC),
    )
    removed = [b for name, b in by_name.items() if name not in kept]
    for backup in removed:
        remove(backup)
    leftovers = stale_leftovers(directory)
    for path in leftovers:
        path.unlink(missing_ok=True)
    return removed, leftovers

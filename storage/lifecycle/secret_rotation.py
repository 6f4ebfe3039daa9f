"""`blogstore rotate-secrets`: re-encrypt every user secret under the keyring's first key.

Batches of `batch_size` rows, one short transaction each, walked in (user_id, name) order so
an unreadable row is counted once and passed, never retried in a loop. A value is decrypted
with the key its row names and sealed again under the current key with a new nonce;
`update_time` stays (the value did not change). Idempotent: a second run finds nothing to do.
Runs as the tables' owner (like retention); one audit event records the counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from storage.actors import SYSTEM, Actor, Caller
from storage.errors import SecretUnreadable
from storage.secrets import Keyring
from storage.uow import Database, Tx

Key = tuple[uuid.UUID, str]  # (user_id, name): the walk's order


@dataclass
class Report:
    run_id: uuid.UUID
    key_id: str  # the current key: everything should end under it
    rotated: int = 0
    batches: int = 0
    unreadable: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)  # user, name, why
    by_key: dict[str, int] = field(default_factory=dict)  # after the run

    @property
    def complete(self) -> bool:
        return not self.unreadable


def rotate(
    db: Database,
    keyring: Keyring,
    *,
    batch_size: int,
    actor: Actor = SYSTEM,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    report = Report(uuid.uuid4(), keyring.current_id)
    caller = Caller(actor, request_id=str(report.run_id))
    after: Key | None = None

    def batch(tx: Tx) -> tuple[int, list[tuple[uuid.UUID, str, str]], Key | None]:
        """One transaction (run again whole on a serialization failure): its own counts."""
        rows = tx.user_secrets.not_under(keyring.current_id, after=after, limit=batch_size)
        resealed, unreadable = [], []
        for row in rows:
            try:
                value = keyring.open_stored(row)
            except SecretUnreadable as error:
                unreadable.append((row.user_id, row.name, error.cause))
                continue
            resealed.append((row, keyring.seal(row.user_id, row.name, value)))
        tx.user_secrets.reseal(resealed)  # one statement for the batch
        last = (rows[-1].user_id, rows[-1].name) if len(rows) == batch_size else None
        return len(resealed), unreadable, last

    while True:
        rotated, unreadable, after = db.run(caller, batch)
        report.rotated += rotated
        report.unreadable += unreadable
        report.batches += 1
        if progress is not None:
            progress(report)
        if after is None:
            break
    report.by_key = db.run(caller, lambda tx: _finish(tx, report))
    return report


def _finish(tx: Tx, report: Report) -> dict[str, int]:
    by_key = tx.user_secrets.count_by_key()
    tx.audit(
        "user_secret.rotate", "secret_key", report.key_id,
        rotated=report.rotated, unreadable=len(report.unreadable), by_key=by_key,
    )  # fmt: skip
    return by_key

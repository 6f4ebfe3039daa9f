"""Crawler leases off the ORM: ClaimDueCompetitors and RecordCompetitorCheck, one round trip each.

Each is one prepared statement (Database.query): the lease UPDATE ... RETURNING, the audit
events INSERTed in a CTE from its rows (the same values Tx.audit writes), and each
competitor's statistics beside it (competitors.STATS_COLUMNS). The ORM path took five to six
round trips, built an entity per row and flushed the audit events at commit.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

from storage.actors import Caller
from storage.errors import NotFound
from storage.models import Competitor
from storage.models.competitors import LEASE_END
from storage.repositories.audit import event_values
from storage.repositories.competitors import (
    RECENT,
    STATS_COLUMNS,
    CompetitorStats,
    stats_joins,
    stats_of,
)
from storage.uow import Database, Prepared

_NAMED = re.compile(r"(?<![:\w]):(\w+)")
# The row the servicer maps to protobuf: the model's attribute names (metadata_).
_COLUMNS = ", ".join(
    f"c.{column.name} AS {attribute.key}" if attribute.key != column.name else f"c.{column.name}"
    for attribute in Competitor.__mapper__.column_attrs
    for column in attribute.columns
)
# Audit events of the statement's rows (`c`): user_id is the competitor's owner.
_AUDIT = (
    "INSERT INTO audit_events (actor_kind, actor_id, actor_name, action, resource_type, "
    "resource_id, request_id, details, user_id) SELECT :actor_kind, :actor_id, :actor_name, "
    ":action, 'competitor', c.id::text, :request_id, :details, c.user_id FROM c"
)
_TYPES = {
    "limit": "integer", "lease_seconds": "integer", "owner": "uuid", "id": "uuid",
    "check_time": "timestamptz", "error": "text", "recent": "interval",
    "actor_kind": "text", "actor_id": "uuid", "actor_name": "text", "action": "text",
    "request_id": "text", "details": "jsonb",
}  # fmt: skip


def _prepared(name: str, sql: str, *, generic_plans: bool = False) -> Prepared:
    """`sql` with :name parameters as a Prepared ($n in order of first use)."""
    params = tuple(dict.fromkeys(_NAMED.findall(sql)))
    body = _NAMED.sub(lambda m: f"${params.index(m.group(1)) + 1}", sql)
    return Prepared(
        name=f"blogstore_{name}", body=body, params=params,
        types=tuple(_TYPES[p] for p in params), uuids_as_text=True,
        writes=True,  # claims and checks: with replicas, the call answers with its token
        generic_plans=generic_plans,
    )  # fmt: skip


def _claim(scoped: bool) -> Prepared:
    """Lease up to :limit due competitors. The locking SELECT is MATERIALIZED so that it runs
    once whatever the plan (inlined, a nested loop may re-run it per row and lease more than
    :limit); SKIP LOCKED lets concurrent claims pass each other's rows. The lease is
    bookkeeping, not an edit: version (etag) and update_time stay.

    Planned once (generic_plans): "auto" replanned it on every call, since with LIMIT $n
    unknown the generic plan looks costlier. `= ANY (ARRAY(...))` rather than `IN (SELECT
    ...)`: the generic plan then finds the leased rows by primary key, where the IN form's
    hash join scanned the whole table (its estimate of the claim: 10% of the due rows)."""
    owner = " AND user_id = :owner" if scoped else ""
    return _prepared(
        "claim_due_competitors" + ("_owned" if scoped else ""),
        "WITH due AS MATERIALIZED (SELECT id FROM competitors WHERE is_active "
        f"AND next_check_time <= now() AND {LEASE_END} <= now(){owner} "
        "ORDER BY next_check_time LIMIT :limit FOR UPDATE SKIP LOCKED), "
        "c AS (UPDATE competitors SET lease_expire_time = now() + "
        "make_interval(secs => :lease_seconds) WHERE id = ANY (ARRAY(SELECT id FROM due)) "
        "RETURNING *), "
        f"audit AS ({_AUDIT} ORDER BY c.next_check_time, c.id) "
        f"SELECT {_COLUMNS}, {STATS_COLUMNS} FROM c{stats_joins('c.id', ':recent')} "
        "ORDER BY c.next_check_time, c.id",
        generic_plans=True,
    )


def _record(scoped: bool) -> Prepared:
    """Stamp a finished check, schedule the next one and release the lease (an edit: the
    version and update_time move)."""
    owner = " AND user_id = :owner" if scoped else ""
    checked = "coalesce(:check_time, now())"
    return _prepared(
        "record_competitor_check" + ("_owned" if scoped else ""),
        f"WITH c AS (UPDATE competitors SET last_check_time = {checked}, last_error = :error, "
        f"next_check_time = {checked} + make_interval(hours => check_frequency_hours), "
        "lease_expire_time = NULL, version = version + 1, update_time = now() "
        f"WHERE id = :id{owner} RETURNING *), audit AS ({_AUDIT}) "
        f"SELECT {_COLUMNS}, {STATS_COLUMNS} FROM c{stats_joins('c.id', ':recent')}",
    )


CLAIM = {False: _claim(False), True: _claim(True)}
_RECORD = {False: _record(False), True: _record(True)}


def _audit(caller: Caller, action: str, details: dict[str, Any]) -> dict[str, Any]:
    """The audit columns the statements take as parameters (the rest come from each row)."""
    values = event_values(caller, action, "competitor", "", details=details)
    return {
        "actor_kind": values["actor_kind"], "actor_id": values["actor_id"],
        "actor_name": values["actor_name"], "action": action,
        "request_id": values["request_id"], "details": json.dumps(details),
    }  # fmt: skip


def claim_due(
    db: Database, caller: Caller, *, limit: int, lease_seconds: int
) -> list[tuple[Any, CompetitorStats]]:
    """Lease up to `limit` due competitors (the longest overdue first) with their statistics."""
    owner = caller.actor.owner_scope()
    params = {
        "limit": limit, "lease_seconds": lease_seconds, "owner": owner, "recent": RECENT,
        **_audit(caller, "competitor.claim", {"lease_seconds": lease_seconds}),
    }  # fmt: skip
    rows = db.query(caller, CLAIM[owner is not None], params)
    return [(row, stats_of(row)) for row in rows]


def record_check(
    db: Database, caller: Caller, competitor_id: uuid.UUID, check_time: dt.datetime | None,
    error: str,
) -> tuple[Any, CompetitorStats]:  # fmt: skip
    """Record a finished check; another user's competitor is NotFound."""
    owner = caller.actor.owner_scope()
    params = {
        "id": competitor_id, "check_time": check_time, "error": error, "owner": owner,
        "recent": RECENT, **_audit(caller, "competitor.record_check", {"failed": bool(error)}),
    }  # fmt: skip
    rows = db.query(caller, _RECORD[owner is not None], params)
    if not rows:
        raise NotFound("competitor", competitor_id)
    return rows[0], stats_of(rows[0])

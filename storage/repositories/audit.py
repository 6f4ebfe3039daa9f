"""The audit trail: the values of one event (written by Tx.audit, or inside the statement of the
change itself on the paths off the ORM), and reading it back."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, select, union
from sqlalchemy.orm import Session

from storage.actors import Actor, ActorKind, Caller
from storage.models import AuditEvent
from storage.repositories.paging import Page, newest_first, to_page


def event_values(
    caller: Caller, action: str, resource_type: str, resource_id: object, *,
    user_id: object = None, details: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The audit_events column values of one event (create_time and id: the database's).

    `user_id` is the user whose resource it is (that user may read the event). Left out,
    it is the resource itself for a user, else the calling user for a user principal
    (which only ever touches its own rows); admins and services acting for a user name it.
    """
    actor = caller.actor
    if user_id is None and resource_type == "user":
        user_id = resource_id
    elif user_id is None and actor.kind is ActorKind.USER:
        user_id = actor.user_id
    return {
        "actor_kind": actor.kind.value,
        "actor_id": actor.user_id,
        "actor_name": actor.name,
        "action": action,
        "resource_type": resource_type,
        "resource_id": str(resource_id),
        "request_id": caller.request_id,
        "details": details,
        "user_id": None if user_id is None else uuid.UUID(str(user_id)),
    }


@dataclass(frozen=True)
class AuditFilters:
    user_id: uuid.UUID | None = None  # events about this user's resources
    actor_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None


class AuditRepository:
    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    def list(self, filters: AuditFilters, *, after: tuple | None, limit: int) -> Page[AuditEvent]:
        """Newest first on (create_time, id).

        A user principal sees the events it caused and those about its resources. That OR
        is run as two keyset scans (one per index: actor_id, user_id), each stopping after
        a page, merged by UNION; a single query with OR would read and sort all of both.
        """
        conditions = _conditions(filters)
        keys = select(AuditEvent.create_time, AuditEvent.id).where(*conditions)
        me = self.actor.owner_scope()
        if me is None:
            scopes: list[Select] = [keys]
        else:
            scopes = [keys.where(AuditEvent.actor_id == me), keys.where(AuditEvent.user_id == me)]
        pages = [newest_first(s, AuditEvent, after, limit) for s in scopes]
        page = (union(*pages) if len(pages) > 1 else pages[0]).subquery()
        stmt = select(AuditEvent).join(page, AuditEvent.id == page.c.id)
        stmt = stmt.order_by(AuditEvent.create_time.desc(), AuditEvent.id.desc()).limit(limit + 1)
        return to_page(self.session.scalars(stmt).all(), limit)


def _conditions(f: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool] | None] = [
        AuditEvent.user_id == f.user_id if f.user_id else None,
        AuditEvent.actor_id == f.actor_id if f.actor_id else None,
        AuditEvent.resource_type == f.resource_type if f.resource_type else None,
        AuditEvent.resource_id == f.resource_id if f.resource_id else None,
        AuditEvent.action == f.action if f.action else None,
        AuditEvent.create_time >= f.start_time if f.start_time else None,
        AuditEvent.create_time < f.end_time if f.end_time else None,
    ]
    return [c for c in conditions if c is not None]

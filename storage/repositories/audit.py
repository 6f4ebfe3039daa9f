"""Reading the audit trail (writes: Tx.audit, in the transaction of the change itself)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, select, union
from sqlalchemy.orm import Session

from storage.actors import Actor
from storage.models import AuditEvent
from storage.repositories.paging import Page, newest_first, to_page


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

"""Append-only audit trail, written in the same transaction as the change it records."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base


class AuditEvent(Base):
    """Range-partitioned by UTC month of create_time (migration 0020)."""

    __tablename__ = "audit_events"

    # No foreign key on actor or resource: the trail outlives purged users.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    create_time: Mapped[dt.datetime] = mapped_column(server_default=func.now(), primary_key=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    actor_name: Mapped[str] = mapped_column(String(100), server_default="")
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(50))
    resource_id: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str] = mapped_column(String(100), server_default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # The user whose resource the event is about (who may read it); NULL for system-wide
    # events such as a retention run (migration 0010).
    user_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        Index("ix_audit_events_resource", "resource_type", "resource_id", "create_time"),
        Index("ix_audit_events_actor_id_create_time", "actor_id", "create_time"),
        # ListAuditEvents for one user, and for everyone; retention's walk by age.
        Index("ix_audit_events_user_id_create_time_id", "user_id", "create_time", "id"),
        Index("ix_audit_events_create_time_id", "create_time", "id"),
        {"postgresql_partition_by": "RANGE (create_time)"},
    )

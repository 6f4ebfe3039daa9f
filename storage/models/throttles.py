"""Login back-off state (storage/throttle.py): one row per throttled login or address digest."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, LargeBinary, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at


class LoginThrottle(Base):
    __tablename__ = "login_throttles"
    __table_args__ = (Index("ix_login_throttles_updated", "updated"),)

    key: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)  # SHA-256, never a login
    failures: Mapped[int] = mapped_column(server_default=text("0"))
    blocked_until: Mapped[dt.datetime | None]
    updated: Mapped[dt.datetime] = created_at()  # the last counted attempt

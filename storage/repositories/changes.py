"""Applying changes to a loaded row, reading back what the database computed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement


def apply_changes(session: Session, row: Any, values: dict[str, Any]) -> Any:
    """Set attributes and flush (the version column guards the UPDATE).

    Values given as SQL expressions (now(), durations) are computed by the database and
    refreshed afterwards, so the row stays complete once the session is closed.
    """
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    from_database = [name for name, value in values.items() if isinstance(value, ClauseElement)]
    if from_database:
        session.refresh(row, attribute_names=from_database)
    return row

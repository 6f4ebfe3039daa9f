"""Provenance of an article version: who made it, in which call, and by which pipeline stage.

The current version's provenance is kept on the article row (the `made_*` columns); when a
change replaces that version, the revision that keeps it gets the same columns. So every
version, current or kept, says who made it, while `article_revisions.actor_id` keeps saying
who replaced it. Versions from before migration 0016 have no provenance (all columns NULL).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from storage.actors import Caller

MAX_NAME_CHARS = 100  # a service principal's name, as audit_events.actor_name
MAX_REQUEST_ID_CHARS = 100  # the interceptor accepts x-request-id values of 1-100 characters
MAX_STAGE_CHARS = 50  # stage names come from storage.rules.PIPELINE_STAGES
# The columns, on articles and article_revisions alike (migration 0016).
COLUMNS = (
    "made_by_kind", "made_by_id", "made_by_name", "made_request_id", "made_pipeline_id",
    "made_pipeline_stage",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PipelineStep:
    """The pipeline run (and the stage of it) that made a change."""

    pipeline_id: uuid.UUID
    stage: str = ""


def made_by(caller: Caller, step: PipelineStep | None) -> dict[str, Any]:
    """The provenance columns for a version the caller makes now."""
    actor = caller.actor
    return {
        "made_by_kind": actor.kind.value,
        "made_by_id": actor.user_id,
        "made_by_name": actor.name[:MAX_NAME_CHARS],
        "made_request_id": caller.request_id[:MAX_REQUEST_ID_CHARS],
        "made_pipeline_id": step.pipeline_id if step else None,
        "made_pipeline_stage": step.stage if step else "",
    }


def provenance_of(row: Any) -> dict[str, Any]:
    """The provenance columns of an article or revision row (all None before 0016)."""
    return {name: getattr(row, name, None) for name in COLUMNS}

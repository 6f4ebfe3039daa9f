"""Pipelines: scoped reads, idempotent create, and state transitions under a row lock."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Uuid, extract, func, select

from storage.errors import FailedPrecondition, NotFound
from storage.models import Article, Pipeline
from storage.repositories.base import ScopedRepository
from storage.repositories.changes import apply_changes
from storage.repositories.paging import Page, newest_first, to_page

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
# transition -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({"pending"}), "running"),
    "complete": (frozenset({"running"}), "succeeded"),
    "fail": (frozenset({"running"}), "failed"),
    "cancel": (frozenset({"pending", "running"}), "cancelled"),
    "retry": (frozenset({"failed"}), "pending"),
}


@dataclass(frozen=True)
class PipelineFilters:
    user_id: uuid.UUID | None = None
    state: str | None = None
    article_id: uuid.UUID | None = None
    start_create_time: dt.datetime | None = None
    end_create_time: dt.datetime | None = None


class PipelineRepository(ScopedRepository[Pipeline]):
    model = Pipeline
    resource = "pipeline"

    def create(
        self, user_id: uuid.UUID, input_config: dict[str, Any], request_id: uuid.UUID | None
    ) -> tuple[Pipeline, bool]:
        """Insert a PENDING pipeline; a repeated request_id (with the same input_config)
        returns the first one and False."""
        return self.create_once(
            {"user_id": user_id, "input_config": input_config},
            request_id,
            same=lambda pipeline: pipeline.input_config == input_config,
        )

    def list(self, filters: PipelineFilters, *, after: tuple | None, limit: int) -> Page[Pipeline]:
        f = filters
        conditions: list[ColumnElement[bool] | None] = [
            Pipeline.user_id == f.user_id if f.user_id else None,
            Pipeline.state == f.state if f.state else None,
            Pipeline.article_id == f.article_id if f.article_id else None,
            Pipeline.create_time >= f.start_create_time if f.start_create_time else None,
            Pipeline.create_time < f.end_create_time if f.end_create_time else None,
        ]
        stmt = self.scoped(select(Pipeline)).where(*(c for c in conditions if c is not None))
        return to_page(
            self.session.scalars(newest_first(stmt, Pipeline, after, limit)).all(), limit
        )

    def transition(
        self,
        pipeline_id: uuid.UUID,
        name: str,
        changes: Callable[[Pipeline], dict[str, Any]] | None = None,
    ) -> Pipeline:
        """Check and change the state under a row lock: of two racing callers, one wins.

        `changes` computes extra values from the locked row (e.g. errors to append).
        """
        allowed_from, target = TRANSITIONS[name]
        pipeline = self.get(pipeline_id, lock="update")
        if pipeline.state not in allowed_from:
            raise FailedPrecondition(
                f"cannot {name} a pipeline that is {pipeline.state.upper()}"
                f" (allowed from {', '.join(sorted(s.upper() for s in allowed_from))})"
            )
        values: dict[str, Any] = {"state": target, **(changes(pipeline) if changes else {})}
        if target == "running":
            values.update(start_time=func.now(), end_time=None, execution_time_ms=None)
        elif target == "pending":
            values.update(
                start_time=None, end_time=None, execution_time_ms=None,
                retry_count=pipeline.retry_count + 1,
            )  # fmt: skip
        else:  # terminal: the database clock measures the run
            values["end_time"] = func.now()
            if pipeline.start_time is not None:
                values["execution_time_ms"] = func.floor(
                    extract("epoch", func.now() - Pipeline.start_time) * 1000
                )
        return apply_changes(self.session, pipeline, values)

    def require_article_of_owner(self, pipeline: Pipeline, article_id: uuid.UUID) -> None:
        """An article may be linked only if it belongs to the pipeline's owner."""
        owned = self.session.scalar(
            select(Article.id).where(Article.id == article_id, Article.user_id == pipeline.user_id)
        )
        if owned is None:
            raise NotFound("article", article_id)

    def record_stage(
        self, pipeline_id: uuid.UUID, stage: str, result: dict[str, Any], warnings: list[str]
    ) -> Pipeline:
        pipeline = self.get(pipeline_id, lock="update")
        if pipeline.state != "running":
            raise FailedPrecondition(
                f"stage results are recorded only while RUNNING; the pipeline is "
                f"{pipeline.state.upper()}"
            )
        values: dict[str, Any] = {"stage_results": {**pipeline.stage_results, stage: result}}
        if warnings:
            values["warnings"] = [*pipeline.warnings, *warnings]
        return apply_changes(self.session, pipeline, values)

    def require_owned(self, links: set[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """NotFound unless each (user_id, pipeline_id) names a pipeline of that user."""
        ids = {pipeline_id for _, pipeline_id in links}
        rows = self.session.execute(
            select(Pipeline.id, Pipeline.user_id).where(Pipeline.id.in_(ids))
        )
        owners = {pipeline_id: user_id for pipeline_id, user_id in rows}
        for user_id, pipeline_id in links:
            if owners.get(pipeline_id) != user_id:
                raise NotFound("pipeline", pipeline_id)


def pipeline_from_row(row: dict[str, Any]) -> Pipeline:
    """A transient Pipeline from its row as JSON (the NOTIFY payload): no query needed."""
    values: dict[str, Any] = {}
    for column in Pipeline.__table__.columns:
        value = row.get(column.name)
        if value is not None and isinstance(column.type, Uuid):
            value = uuid.UUID(value)
        elif value is not None and isinstance(column.type, DateTime):
            value = dt.datetime.fromisoformat(value)
        values[column.key] = value
    return Pipeline(**values)

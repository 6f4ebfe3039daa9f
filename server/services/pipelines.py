"""PipelinesService: pipeline runs as a state machine, stage results, and live watching."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
from blogstore.v1 import pipelines_pb2, pipelines_pb2_grpc
from google.protobuf import json_format, struct_pb2

from server.context import current_caller
from server.paging import PageTokens, filter_key
from server.protoconv import datetime_or_none, etag, timestamp
from server.validation import Violations, list_owner, optional_uuid, owner_id, page_size, parse_uuid
from server.watch import WatchHub
from storage import rules
from storage.actors import Actor
from storage.errors import InvalidArgument
from storage.models import Pipeline
from storage.repositories.pipelines import PipelineFilters
from storage.rules import MAX_STRUCT_BYTES
from storage.rules import PIPELINE_STAGES as STAGES
from storage.uow import Database

STATE_TO_PROTO = {
    "pending": pipelines_pb2.PIPELINE_STATE_PENDING,
    "running": pipelines_pb2.PIPELINE_STATE_RUNNING,
    "succeeded": pipelines_pb2.PIPELINE_STATE_SUCCEEDED,
    "failed": pipelines_pb2.PIPELINE_STATE_FAILED,
    "cancelled": pipelines_pb2.PIPELINE_STATE_CANCELLED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def pipeline_to_proto(p: Pipeline) -> pipelines_pb2.Pipeline:
    return pipelines_pb2.Pipeline(
        id=str(p.id),
        user_id=str(p.user_id),
        article_id=str(p.article_id or ""),
        state=STATE_TO_PROTO[p.state],
        input_config=struct(p.input_config),
        stage_results={name: struct(result) for name, result in p.stage_results.items()},
        errors=p.errors,
        warnings=p.warnings,
        retry_count=p.retry_count,
        start_time=timestamp(p.start_time),
        end_time=timestamp(p.end_time),
        execution_time_ms=p.execution_time_ms or 0,
        total_cost_micros=p.total_cost_micros,
        llm_tokens_used=p.llm_tokens_used,
        api_calls_made=p.api_calls_made,
        create_time=timestamp(p.create_time),
        update_time=timestamp(p.update_time),
        etag=etag(p.version),
    )


def struct_value(field: str, message: struct_pb2.Struct) -> dict[str, Any]:
    if message.ByteSize() > MAX_STRUCT_BYTES:
        raise InvalidArgument({field: f"must be at most {MAX_STRUCT_BYTES} bytes"})
    return json_format.MessageToDict(message)


def messages(field: str, values: Any) -> list[str]:
    v = Violations()
    items = rules.messages(v, field, list(values))
    v.raise_if_any()
    return items


class PipelinesServicer(pipelines_pb2_grpc.PipelinesServiceServicer):
    def __init__(self, db: Database, page_tokens: PageTokens, hub: WatchHub) -> None:
        self.db = db
        self.page_tokens = page_tokens
        self.hub = hub

    def CreatePipeline(
        self, request: pipelines_pb2.CreatePipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.CreatePipelineResponse:
        caller = current_caller()
        user_id = owner_id("user_id", request.user_id, caller.actor)
        config = struct_value("input_config", request.input_config)
        request_id = optional_uuid("request_id", request.request_id)

        def create(tx):
            tx.users.require_visible({user_id})
            pipeline, created = tx.pipelines.create(user_id, config, request_id)
            if created:
                tx.audit("pipeline.create", "pipeline", pipeline.id, user_id=pipeline.user_id)
            return pipeline

        pipeline = self.db.run(caller, create)
        return pipelines_pb2.CreatePipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def GetPipeline(
        self, request: pipelines_pb2.GetPipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.GetPipelineResponse:
        caller = current_caller()
        pipeline_id = parse_uuid("id", request.id)
        pipeline = self.db.read(caller, lambda tx: tx.pipelines.get(pipeline_id))
        return pipelines_pb2.GetPipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def ListPipelines(
        self, request: pipelines_pb2.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.ListPipelinesResponse:
        caller = current_caller()
        filters = self._filters(request, caller.actor)
        limit = page_size(request.page_size)
        key = filter_key(filters)
        after = self.page_tokens.decode(request.page_token, key)
        page = self.db.read(caller, lambda tx: tx.pipelines.list(filters, after=after, limit=limit))
        return pipelines_pb2.ListPipelinesResponse(
            pipelines=[pipeline_to_proto(p) for p in page.items],
            next_page_token=self.page_tokens.encode(page.next_cursor, key),
        )

    def StartPipeline(
        self, request: pipelines_pb2.StartPipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.StartPipelineResponse:
        pipeline = self._transition(request.id, "start")
        return pipelines_pb2.StartPipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def CompletePipeline(
        self, request: pipelines_pb2.CompletePipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.CompletePipelineResponse:
        article_id = optional_uuid("article_id", request.article_id)

        def link_article(tx, pipeline):
            if article_id is None:
                return {}
            tx.pipelines.require_article_of_owner(pipeline, article_id)
            return {"article_id": article_id}

        pipeline = self._transition(request.id, "complete", link_article)
        return pipelines_pb2.CompletePipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def FailPipeline(
        self, request: pipelines_pb2.FailPipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.FailPipelineResponse:
        errors = messages("errors", request.errors)
        if not errors:
            raise InvalidArgument({"errors": "give at least one error"})

        def append_errors(tx, pipeline):
            return {"errors": [*pipeline.errors, *errors]}

        pipeline = self._transition(request.id, "fail", append_errors)
        return pipelines_pb2.FailPipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def CancelPipeline(
        self, request: pipelines_pb2.CancelPipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.CancelPipelineResponse:
        pipeline = self._transition(request.id, "cancel")
        return pipelines_pb2.CancelPipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def RetryPipeline(
        self, request: pipelines_pb2.RetryPipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.RetryPipelineResponse:
        pipeline = self._transition(request.id, "retry")
        return pipelines_pb2.RetryPipelineResponse(pipeline=pipeline_to_proto(pipeline))

    def RecordStageResult(
        self, request: pipelines_pb2.RecordStageResultRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.RecordStageResultResponse:
        caller = current_caller()
        pipeline_id = parse_uuid("pipeline_id", request.pipeline_id)
        stage = request.stage.strip()
        if stage not in STAGES:
            raise InvalidArgument({"stage": f"must be one of: {', '.join(sorted(STAGES))}"})
        result = struct_value("result", request.result)
        warnings = messages("warnings", request.warnings)

        def record(tx):
            pipeline = tx.pipelines.record_stage(pipeline_id, stage, result, warnings)
            tx.audit(
                "pipeline.record_stage", "pipeline", pipeline.id,
                user_id=pipeline.user_id, stage=stage,
            )  # fmt: skip
            return pipeline

        pipeline = self.db.run(caller, record)
        return pipelines_pb2.RecordStageResultResponse(pipeline=pipeline_to_proto(pipeline))

    def WatchPipeline(
        self,
        request: pipelines_pb2.WatchPipelineRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[pipelines_pb2.WatchPipelineResponse | None], None]
        | None = None,
    ) -> None:
        """Non-blocking: registers a watcher and returns; the hub sends and ends the stream."""
        pipeline_id = parse_uuid("id", request.id)
        self.hub.open(current_caller(), pipeline_id, context, send_response_callback)

    WatchPipeline.experimental_non_blocking = True  # type: ignore[attr-defined]

    def _transition(self, raw_id: str, name: str, extra=None) -> Pipeline:
        caller = current_caller()
        pipeline_id = parse_uuid("id", raw_id)

        def work(tx):
            changes = functools.partial(extra, tx) if extra else None
            pipeline = tx.pipelines.transition(pipeline_id, name, changes)
            tx.audit(
                f"pipeline.{name}", "pipeline", pipeline.id,
                user_id=pipeline.user_id, state=pipeline.state,
            )  # fmt: skip
            return pipeline

        return self.db.run(caller, work)

    def _filters(self, request, actor: Actor) -> PipelineFilters:
        v = Violations()
        state = STATE_FROM_PROTO.get(request.state) if request.state else None
        v.check(not request.state or state is not None, "state", "is not a known state")
        v.raise_if_any()
        filters = PipelineFilters(
            user_id=list_owner("user_id", request.user_id, actor),
            state=state,
            article_id=optional_uuid("article_id", request.article_id),
            start_create_time=datetime_or_none(request, "start_create_time"),
            end_create_time=datetime_or_none(request, "end_create_time"),
        )
        return filters

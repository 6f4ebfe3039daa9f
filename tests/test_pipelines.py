"""PipelinesService: the state machine, stage results, isolation and WatchPipeline."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import articles_pb2, articles_pb2_grpc, pipelines_pb2_grpc
from blogstore.v1 import pipelines_pb2 as pb
from google.protobuf import struct_pb2

from server.app import create_server
from tests.support import SERVICE_KEY, details_of, make_settings, status_of

Code = grpc.StatusCode
S = pb.PipelineState


def struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


@pytest.fixture(scope="module")
def owner(new_account, connect):
    account = new_account()
    return account, pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))


def new_pipeline(stub, **kwargs) -> pb.Pipeline:
    return stub.CreatePipeline(pb.CreatePipelineRequest(**kwargs)).pipeline


def drive_to(stub, state: int) -> pb.Pipeline:
    """A fresh pipeline in `state`."""
    p = new_pipeline(stub, input_config=struct(topic="seo"))
    steps = {
        S.PIPELINE_STATE_PENDING: [],
        S.PIPELINE_STATE_RUNNING: ["Start"],
        S.PIPELINE_STATE_SUCCEEDED: ["Start", "Complete"],
        S.PIPELINE_STATE_FAILED: ["Start", "Fail"],
        S.PIPELINE_STATE_CANCELLED: ["Cancel"],
    }[state]
    for step in steps:
        p = transition(stub, step, p.id)
    assert p.state == state
    return p


def transition(stub, name: str, pipeline_id: str) -> pb.Pipeline:
    request = getattr(pb, f"{name}PipelineRequest")(id=pipeline_id)
    if name == "Fail":
        request.errors.append("boom")
    return getattr(stub, f"{name}Pipeline")(request).pipeline


ALLOWED = {
    ("Start", S.PIPELINE_STATE_PENDING): S.PIPELINE_STATE_RUNNING,
    ("Complete", S.PIPELINE_STATE_RUNNING): S.PIPELINE_STATE_SUCCEEDED,
    ("Fail", S.PIPELINE_STATE_RUNNING): S.PIPELINE_STATE_FAILED,
    ("Cancel", S.PIPELINE_STATE_PENDING): S.PIPELINE_STATE_CANCELLED,
    ("Cancel", S.PIPELINE_STATE_RUNNING): S.PIPELINE_STATE_CANCELLED,
    ("Retry", S.PIPELINE_STATE_FAILED): S.PIPELINE_STATE_PENDING,
}
STATES = [s for s in S.values() if s != S.PIPELINE_STATE_UNSPECIFIED]


@pytest.mark.parametrize("state", STATES, ids=[S.Name(s) for s in STATES])
@pytest.mark.parametrize("name", ["Start", "Complete", "Fail", "Cancel", "Retry"])
def test_every_state_and_transition(owner, name, state):
    _, stub = owner
    pipeline = drive_to(stub, state)
    expected = ALLOWED.get((name, state))
    if expected is None:
        error = details_of(lambda: transition(stub, name, pipeline.id))
        assert error.code is Code.FAILED_PRECONDITION
        assert S.Name(state).removeprefix("PIPELINE_STATE_") in error.message
        current = stub.GetPipeline(pb.GetPipelineRequest(id=pipeline.id)).pipeline
        assert current.state == state and current.etag == pipeline.etag  # nothing written
    else:
        assert transition(stub, name, pipeline.id).state == expected


def test_times_are_set_by_the_server(owner):
    _, stub = owner
    p = drive_to(stub, S.PIPELINE_STATE_RUNNING)
    assert p.HasField("start_time") and not p.HasField("end_time")
    time.sleep(0.05)
    done = transition(stub, "Complete", p.id)
    assert done.HasField("end_time") and done.execution_time_ms >= 50
    assert done.end_time.ToDatetime() >= done.start_time.ToDatetime()


def test_retry_counts_and_errors_accumulate(owner):
    _, stub = owner
    p = drive_to(stub, S.PIPELINE_STATE_FAILED)
    retried = transition(stub, "Retry", p.id)
    assert retried.retry_count == 1 and not retried.HasField("start_time")
    transition(stub, "Start", p.id)
    failed = stub.FailPipeline(pb.FailPipelineRequest(id=p.id, errors=["again", "twice"])).pipeline
    assert list(failed.errors) == ["boom", "again", "twice"]
    no_errors = pb.FailPipelineRequest(id=p.id)
    assert status_of(lambda: stub.FailPipeline(no_errors)) is Code.INVALID_ARGUMENT


def test_two_workers_starting_one_pipeline_one_wins(owner, connect):
    _, stub = owner
    worker = pipelines_pb2_grpc.PipelinesServiceStub(connect(SERVICE_KEY))
    for _ in range(5):
        p = new_pipeline(stub)

        def start(_, pipeline_id=p.id):
            try:
                worker.StartPipeline(pb.StartPipelineRequest(id=pipeline_id))
                return Code.OK
            except grpc.RpcError as error:
                return error.code()

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(start, range(2)))
        assert sorted(c.name for c in codes) == ["FAILED_PRECONDITION", "OK"]


def test_create_is_idempotent_with_request_id(owner):
    _, stub = owner
    request_id = str(uuid.uuid4())
    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(lambda _: new_pipeline(stub, request_id=request_id).id, range(4)))
    assert len(ids) == 1


def test_request_id_reused_for_another_pipeline_is_invalid(owner):
    _, stub = owner
    request_id = str(uuid.uuid4())
    first = new_pipeline(stub, input_config=struct(topic="seo"), request_id=request_id)
    again = new_pipeline(stub, input_config=struct(topic="seo"), request_id=request_id)
    assert again.id == first.id
    error = details_of(
        lambda: new_pipeline(stub, input_config=struct(topic="other"), request_id=request_id)
    )
    assert error.code is Code.INVALID_ARGUMENT and "request_id" in error.field_violations


def test_stage_results_merge_without_losing_stages(owner):
    _, stub = owner
    p = drive_to(stub, S.PIPELINE_STATE_RUNNING)
    stages = ["competitor_data", "topic_recommendation", "fact_check_report", "wordpress_result"]

    def record(stage):
        return stub.RecordStageResult(
            pb.RecordStageResultRequest(
                pipeline_id=p.id, stage=stage, result=struct(stage=stage, n=1), warnings=[stage]
            )
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(record, stages))
    record("competitor_data")  # replacing one stage keeps the others
    final = stub.GetPipeline(pb.GetPipelineRequest(id=p.id)).pipeline
    assert set(final.stage_results) == set(stages)
    assert final.stage_results["fact_check_report"]["stage"] == "fact_check_report"
    assert sorted(final.warnings) == sorted([*stages, "competitor_data"])


def test_stage_rules(owner):
    _, stub = owner
    pending = new_pipeline(stub)
    request = pb.RecordStageResultRequest(pipeline_id=pending.id, stage="outline", result=struct())
    assert status_of(lambda: stub.RecordStageResult(request)) is Code.FAILED_PRECONDITION
    running = drive_to(stub, S.PIPELINE_STATE_RUNNING)
    for stage in ("", "no_such_stage", "Outline"):
        bad = pb.RecordStageResultRequest(pipeline_id=running.id, stage=stage, result=struct())
        assert status_of(lambda r=bad: stub.RecordStageResult(r)) is Code.INVALID_ARGUMENT


def test_complete_links_an_article_of_the_owner_only(owner, new_account, connect):
    account, stub = owner
    mine = (
        articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
        .CreateArticle(
            articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title="Produced"))
        )
        .article
    )
    other = new_account()
    theirs = (
        articles_pb2_grpc.ArticlesServiceStub(connect(other.token))
        .CreateArticle(
            articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title="Not yours"))
        )
        .article
    )
    service = pipelines_pb2_grpc.PipelinesServiceStub(connect(SERVICE_KEY))
    p = drive_to(stub, S.PIPELINE_STATE_RUNNING)
    foreign = pb.CompletePipelineRequest(id=p.id, article_id=theirs.id)
    assert status_of(lambda: service.CompletePipeline(foreign)) is Code.NOT_FOUND
    assert (
        stub.GetPipeline(pb.GetPipelineRequest(id=p.id)).pipeline.state == S.PIPELINE_STATE_RUNNING
    )
    done = stub.CompletePipeline(pb.CompletePipelineRequest(id=p.id, article_id=mine.id)).pipeline
    assert done.article_id == mine.id
    listed = stub.ListPipelines(pb.ListPipelinesRequest(article_id=mine.id)).pipelines
    assert [x.id for x in listed] == [p.id]


def test_list_filters_and_pages(new_account, connect):
    account = new_account()
    stub = pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))
    running = {drive_to(stub, S.PIPELINE_STATE_RUNNING).id for _ in range(3)}
    pending = {new_pipeline(stub).id for _ in range(2)}
    by_state = stub.ListPipelines(pb.ListPipelinesRequest(state=S.PIPELINE_STATE_RUNNING))
    assert {p.id for p in by_state.pipelines} == running
    seen, token = [], ""
    while True:
        page = stub.ListPipelines(pb.ListPipelinesRequest(page_size=2, page_token=token))
        seen += [p.id for p in page.pipelines]
        if not (token := page.next_page_token):
            break
    assert seen and len(seen) == len(set(seen)) == 5 and set(seen) == running | pending


def test_isolation_between_users(owner, new_account, connect):
    _, stub = owner
    p = drive_to(stub, S.PIPELINE_STATE_RUNNING)
    intruder = new_account()
    other = pipelines_pb2_grpc.PipelinesServiceStub(connect(intruder.token))
    calls = {
        "Get": lambda: other.GetPipeline(pb.GetPipelineRequest(id=p.id)),
        "Complete": lambda: other.CompletePipeline(pb.CompletePipelineRequest(id=p.id)),
        "Cancel": lambda: other.CancelPipeline(pb.CancelPipelineRequest(id=p.id)),
        "Record": lambda: other.RecordStageResult(
            pb.RecordStageResultRequest(pipeline_id=p.id, stage="outline", result=struct())
        ),
        "List": lambda: other.ListPipelines(pb.ListPipelinesRequest(user_id=p.user_id)),
        "Watch": lambda: list(other.WatchPipeline(pb.WatchPipelineRequest(id=p.id), timeout=5)),
        "CreateFor": lambda: other.CreatePipeline(pb.CreatePipelineRequest(user_id=p.user_id)),
    }
    for name, call in calls.items():
        assert status_of(call) is Code.NOT_FOUND, name
    assert (
        stub.GetPipeline(pb.GetPipelineRequest(id=p.id)).pipeline.state == S.PIPELINE_STATE_RUNNING
    )


class TestWatch:
    def test_receives_each_change_in_order_and_ends_at_succeeded(self, owner):
        _, stub = owner
        p = new_pipeline(stub)
        stream = stub.WatchPipeline(pb.WatchPipelineRequest(id=p.id), timeout=30)
        received = []
        reader = threading.Thread(target=lambda: received.extend(r.pipeline for r in stream))
        reader.start()
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        transition(stub, "Start", p.id)
        for stage in ("competitor_data", "outline", "article_draft"):
            stub.RecordStageResult(
                pb.RecordStageResultRequest(pipeline_id=p.id, stage=stage, result=struct(ok=True))
            )
        transition(stub, "Complete", p.id)
        reader.join(timeout=10)
        assert not reader.is_alive(), "the stream did not end at SUCCEEDED"
        assert [r.etag for r in received] == [f'"{v}"' for v in range(1, 7)]
        assert [r.state for r in received] == [
            S.PIPELINE_STATE_PENDING,
            *[S.PIPELINE_STATE_RUNNING] * 4,
            S.PIPELINE_STATE_SUCCEEDED,
        ]
        assert len(received[-1].stage_results) == 3

    def test_a_terminal_pipeline_is_sent_once_and_the_stream_ends(self, owner):
        _, stub = owner
        p = drive_to(stub, S.PIPELINE_STATE_CANCELLED)
        responses = list(stub.WatchPipeline(pb.WatchPipelineRequest(id=p.id), timeout=10))
        assert [r.pipeline.state for r in responses] == [S.PIPELINE_STATE_CANCELLED]

    def test_unknown_pipeline(self, owner):
        _, stub = owner
        request = pb.WatchPipelineRequest(id=str(uuid.uuid4()))
        assert status_of(lambda: list(stub.WatchPipeline(request, timeout=5))) is Code.NOT_FOUND


@pytest.fixture
def small_server(database_url, admin_key):
    """A server with 2 request threads and room for 3 watchers."""
    app = create_server(make_settings(database_url, threads=2, max_watchers=3))
    app.start()
    yield app
    app.stop(grace=0)


def test_watchers_are_bounded_free_their_slot_and_leave_workers_free(small_server, owner):
    account, _ = owner
    channel = grpc.insecure_channel(f"127.0.0.1:{small_server.port}")
    metadata = [("authorization", f"Bearer {account.token}")]
    stub = pipelines_pb2_grpc.PipelinesServiceStub(channel)
    p = stub.CreatePipeline(pb.CreatePipelineRequest(), metadata=metadata).pipeline

    def latencies(n: int = 20) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            stub.GetPipeline(pb.GetPipelineRequest(id=p.id), metadata=metadata, timeout=5)
            out.append(time.perf_counter() - started)
        return out

    baseline = statistics.median(latencies())
    streams = [
        stub.WatchPipeline(pb.WatchPipelineRequest(id=p.id), metadata=metadata, timeout=30)
        for _ in range(3)
    ]
    for stream in streams:
        next(stream)  # each watcher is open and has its first message
    assert small_server.watch_hub.open_watchers == 3
    loaded = latencies()  # 3 watchers open, yet only 2 request threads exist
    assert max(loaded) < 1.0 and statistics.median(loaded) < baseline * 3 + 0.02
    fourth = stub.WatchPipeline(pb.WatchPipelineRequest(id=p.id), metadata=metadata, timeout=5)
    assert status_of(lambda: next(fourth)) is Code.RESOURCE_EXHAUSTED
    streams[0].cancel()  # the client goes away
    deadline = time.monotonic() + 5
    while small_server.watch_hub.open_watchers > 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert small_server.watch_hub.open_watchers == 2
    again = stub.WatchPipeline(pb.WatchPipelineRequest(id=p.id), metadata=metadata, timeout=30)
    assert next(again).pipeline.id == p.id
    for stream in (*streams[1:], again):
        stream.cancel()
    channel.close()


def test_articles_link_only_their_owners_pipelines(owner, new_account, connect):
    account, stub = owner
    articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    pipeline = new_pipeline(stub)
    made = articles.CreateArticle(
        articles_pb2.CreateArticleRequest(
            article=articles_pb2.Article(title="From a run", pipeline_id=pipeline.id)
        )
    ).article
    assert made.pipeline_id == pipeline.id
    batch = articles.BatchCreateArticles(
        articles_pb2.BatchCreateArticlesRequest(
            articles=[articles_pb2.Article(title="Batch run", pipeline_id=pipeline.id)]
        )
    ).articles
    assert batch[0].pipeline_id == pipeline.id
    listed = articles.ListArticles(articles_pb2.ListArticlesRequest(pipeline_id=pipeline.id))
    assert {a.id for a in listed.articles} == {made.id, batch[0].id}
    other = new_account()
    theirs = (
        pipelines_pb2_grpc.PipelinesServiceStub(connect(other.token))
        .CreatePipeline(pb.CreatePipelineRequest())
        .pipeline
    )
    foreign = articles_pb2.CreateArticleRequest(
        article=articles_pb2.Article(title="Not mine", pipeline_id=theirs.id)
    )
    assert status_of(lambda: articles.CreateArticle(foreign)) is Code.NOT_FOUND
    update = articles_pb2.UpdateArticleRequest(
        article=articles_pb2.Article(id=made.id, pipeline_id=theirs.id),
        update_mask={"paths": ["pipeline_id"]},
    )
    assert status_of(lambda: articles.UpdateArticle(update)) is Code.NOT_FOUND

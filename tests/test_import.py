"""Legacy import: the sample set under tests/data/legacy, twice; the API's rules; timestamps."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from blogstore import client
from blogstore.v1 import (
    articles_pb2,
    articles_pb2_grpc,
    pipelines_pb2,
    pipelines_pb2_grpc,
    users_pb2,
)
from sqlalchemy import text

from server.commands.import_json import ProgressBar
from storage.engine import make_engine
from storage.errors import NotFound
from storage.lifecycle.legacy_import import import_legacy
from storage.uow import Database
from tests.support import server_env

SAMPLES = Path(__file__).parent / "data" / "legacy"
INVALID = {
    ("articles/bad-json.json", "file"),
    ("articles/bad-slug.json", "slug"),
    ("articles/missing-title.json", "title"),
    ("articles/wrong-types.json", "secondary_keywords"),
    ("articles/wrong-types.json", "seo_score"),
    ("articles/wrong-types.json", "wp_post_id"),
    ("articles/wrong-types.json", "created_at"),
    ("pipeline_history.json[3]", "status"),
}
GOOD = [
    "articles/cafe-guide.json",
    "articles/how-to-brew-pour-over-coffee.json",
    "articles/remote-work-tools.json",
    "articles/seo-checklist-2024.json",
    "pipeline_history.json[0]",
    "pipeline_history.json[1]",
    "pipeline_history.json[2]",
]


@pytest.fixture(scope="module")
def db(database_url):
    database = Database(make_engine(database_url, pool_size=2), statement_timeout_ms=30_000)
    yield database
    database.dispose()


@pytest.fixture
def owner(new_account, connect):
    account = new_account()
    account.articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    account.pipelines = pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))
    return account


def rows(db, owner) -> dict[str, int]:
    with db.engine.connect() as c:
        return {
            table: c.scalar(
                text(f"SELECT count(*) FROM {table} WHERE user_id = :u"), {"u": owner.id}
            )
            for table in ("articles", "pipelines")
        }


def listed(owner) -> list[articles_pb2.Article]:
    request = articles_pb2.ListArticlesRequest(
        order_by="title", view=articles_pb2.ARTICLE_VIEW_FULL
    )
    return list(owner.articles.ListArticles(request).articles)


def test_the_sample_set_imports_once_and_a_second_run_adds_nothing(db, owner):
    first = import_legacy(db, SAMPLES, owner.user.email)
    assert first.files == 9
    assert first.imported == {"article": 4, "pipeline": 3} and first.duplicates == []
    assert {(p.source, p.field) for p in first.invalid} == INVALID
    assert rows(db, owner) == {"articles": 4, "pipelines": 3}
    before = listed(owner)

    second = import_legacy(db, SAMPLES, owner.id)  # by id this time
    assert second.imported == {"article": 0, "pipeline": 0}
    assert sorted(second.duplicates) == GOOD
    assert {(p.source, p.field) for p in second.invalid} == INVALID
    assert rows(db, owner) == {"articles": 4, "pipelines": 3}
    assert listed(owner) == before


def test_imported_articles_keep_their_timestamps_and_get_the_api_derivations(db, owner):
    import_legacy(db, SAMPLES, owner.id)
    by_slug = {a.slug: a for a in listed(owner)}
    coffee = by_slug["how-to-brew-pour-over-coffee"]
    assert coffee.status == articles_pb2.ARTICLE_STATUS_PUBLISHED
    assert coffee.create_time.ToJsonString() == "2024-03-11T16:02:41.512Z"
    assert coffee.publish_time.ToJsonString() == "2024-03-12T09:30:00Z"
    assert coffee.update_time.ToJsonString() == "2024-03-12T09:30:05Z"
    assert (coffee.wp_post_id, coffee.seo_score) == (1042, 87.5)
    assert list(coffee.secondary_keywords) == ["coffee ratio", "gooseneck kettle", "coffee bloom"]
    assert coffee.content_html.startswith("<h1>How to Brew")  # the file's HTML, as given
    assert 50 < coffee.word_count != 112  # derived from the markdown, not the file's count
    assert (coffee.internal_links, coffee.external_links) == (1, 1)  # wp_url's host is internal
    # A naive time is UTC; an empty slug is derived from the title as CreateArticle does.
    checklist = by_slug["on-page-seo-checklist-2024"]
    assert checklist.create_time.ToJsonString() == "2024-05-02T08:15:00Z"
    assert checklist.content_html.startswith("<h1>")  # null HTML: rendered from markdown
    remote = by_slug["12-remote-work-tools-our-team-actually-uses"]
    assert remote.create_time.ToJsonString() == "2023-08-28T08:00:00Z"  # +02:00 kept exactly
    assert remote.status == articles_pb2.ARTICLE_STATUS_ARCHIVED and list(remote.tags) == [
        "remote",
        "productivity",
    ]
    cafe = by_slug["cafe-culture-in-lisbon-where-locals-drink-their-bica"]
    assert list(cafe.secondary_keywords) == ["bica", "lisbon coffee"]  # "keywords" alias
    assert cafe.status == articles_pb2.ARTICLE_STATUS_DRAFT  # "Draft"


def test_pipeline_history_keeps_states_times_totals_and_stage_results(db, owner):
    import_legacy(db, SAMPLES, owner.id)
    page = owner.pipelines.ListPipelines(pipelines_pb2.ListPipelinesRequest())
    done, failed, cancelled = sorted(page.pipelines, key=lambda p: p.create_time.ToJsonString())
    assert done.state == pipelines_pb2.PIPELINE_STATE_SUCCEEDED
    assert done.create_time.ToJsonString() == "2024-03-11T15:58:00Z"
    assert done.end_time.ToJsonString() == "2024-03-11T16:02:40Z"
    assert (done.execution_time_ms, done.total_cost_micros, done.llm_tokens_used) == (
        278000,
        423500,
        18342,
    )
    assert set(done.stage_results) == {
        "competitor_data", "topic_recommendation", "fact_check_report", "wordpress_result",
    }  # fmt: skip
    assert done.stage_results["wordpress_result"]["post_id"] == 1042
    assert list(done.warnings) == ["fact check: one source older than 5 years"]
    assert failed.state == pipelines_pb2.PIPELINE_STATE_FAILED and failed.retry_count == 2
    assert failed.execution_time_ms == 67000  # computed from started_at and completed_at
    assert json.loads(failed.errors[0]) == {
        "stage": "article_draft", "message": "rate limited by the LLM provider",
    }  # fmt: skip
    assert cancelled.state == pipelines_pb2.PIPELINE_STATE_CANCELLED and not cancelled.errors


def test_a_dry_run_writes_nothing_and_reports_the_same(db, owner):
    dry = import_legacy(db, SAMPLES, owner.id, dry_run=True)
    assert dry.imported == {"article": 4, "pipeline": 3}
    assert {(p.source, p.field) for p in dry.invalid} == INVALID
    assert rows(db, owner) == {"articles": 0, "pipelines": 0}


def test_the_rules_are_the_apis(db, owner, tmp_path):
    """A file the API would refuse is refused with the API's words; a taken slug too."""
    title = articles_pb2.Article(title="x", content_markdown="y", meta_title="m" * 161)
    with pytest.raises(grpc.RpcError) as refused:
        owner.articles.CreateArticle(articles_pb2.CreateArticleRequest(article=title))
    api_says = client.error_details(refused.value).field_violations["article.meta_title"]
    owner.articles.CreateArticle(
        articles_pb2.CreateArticleRequest(
            article=articles_pb2.Article(title="Taken", slug="taken-slug", content_markdown="z")
        )
    )
    (tmp_path / "long.json").write_text(json.dumps({"title": "x", "meta_title": "m" * 161}))
    (tmp_path / "taken.json").write_text(json.dumps({"title": "Mine", "slug": "taken-slug"}))
    (tmp_path / "twin-a.json").write_text(json.dumps({"title": "A", "slug": "twin"}))
    (tmp_path / "twin-b.json").write_text(json.dumps({"title": "B", "slug": "twin"}))
    (tmp_path / "list.json").write_text(json.dumps(["not a run"]))
    (tmp_path / "scalar.json").write_text("42")
    report = import_legacy(db, tmp_path, owner.id)
    problems = {(p.source, p.field): p.reason for p in report.invalid}
    assert problems[("long.json", "meta_title")] == api_says
    assert problems[("taken.json", "slug")] == "'taken-slug' is taken by another article"
    assert problems[("list.json[0]", "entry")] == "must be an object"
    assert ("scalar.json", "file") in problems
    assert problems[("twin-b.json", "slug")] == "'twin' is taken by another article"
    assert report.imported == {"article": 1, "pipeline": 0}  # twin-a.json
    single = import_legacy(db, tmp_path / "twin-a.json", owner.id)  # a file as PATH
    assert single.files == 1 and single.duplicates == ["twin-a.json"]


def test_an_unknown_user_is_not_found(db):
    with pytest.raises(NotFound):
        import_legacy(db, SAMPLES, "nobody@example.com")


def test_the_command_line(database_url, owner):
    env = {**os.environ, **server_env(database_url)}
    command = [sys.executable, "-m", "server", "import-json", str(SAMPLES), "--user"]
    dry = subprocess.run([*command, owner.user.email, "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "would import: 4 articles, 3 pipelines" in dry.stdout
    real = subprocess.run([*command, owner.user.email], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert real.returncode == 1  # the sample set holds invalid files
    assert "imported: 4 articles, 3 pipelines" in real.stdout
    assert "articles/bad-slug.json: slug: must be lower-case" in real.stdout
    assert "[" not in real.stderr  # no progress bar when stderr is not a terminal
    again = subprocess.run([*command, owner.id], env=env, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert "imported: 0 articles, 0 pipelines" in again.stdout
    assert "skipped as duplicates (already imported): 7" in again.stdout
    unknown = subprocess.run([*command, "nobody@example.com"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert unknown.returncode == 1 and "no user 'nobody@example.com'" in unknown.stderr


def test_progress_bar_draws_in_place():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(1, 4)
    bar(4, 4)
    bar.close()
    assert stream.getvalue() == (
        "\r[#######.......................] 1/4 files\r[##############################] 4/4 files\n"
    )


def test_imports_are_audited_for_the_owner(db, owner):
    import_legacy(db, SAMPLES, owner.id)
    events = owner.stub.ListAuditEvents(
        users_pb2.ListAuditEventsRequest(resource_type="article", action="article.import")
    ).events
    assert sorted(e.details["source"] for e in events) == GOOD[:4]
    assert all(e.user_id == owner.id and e.actor_name == "cli" for e in events)

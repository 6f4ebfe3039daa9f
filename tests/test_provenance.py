"""Article provenance, GetArticleRevision and DiffArticleRevision through the real server."""

from __future__ import annotations

import difflib
import random
import re
import time
import uuid

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, common_pb2, pipelines_pb2, pipelines_pb2_grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from storage.revision_diff import unified_diff
from tests.support import SERVICE_KEY, details_of, status_of, unique

Code = grpc.StatusCode
MiB = 2 * 1024 * 1024


def rid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def with_request_id(method, request, request_id: str):
    """Call `method` sending x-request-id; the response's article (or articles) and the id
    the server answered with."""
    response, call = method.with_call(request, metadata=[("x-request-id", request_id)])
    answered = dict(call.trailing_metadata())["x-request-id"]
    assert answered == request_id
    found = response.articles if hasattr(response, "articles") else response.article
    return found, answered


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


@pytest.fixture(scope="module")
def alice(new_account, connect):
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


@pytest.fixture(scope="module")
def service(connect):
    channel = connect(SERVICE_KEY)
    return articles_pb2_grpc.ArticlesServiceStub(channel), pipelines_pb2_grpc.PipelinesServiceStub(
        channel
    )


def new_pipeline(service, user_id: str) -> str:
    _, pipelines = service
    return pipelines.CreatePipeline(
        pipelines_pb2.CreatePipelineRequest(user_id=user_id)
    ).pipeline.id


def create(stub, md: str = "one\n", **fields) -> pb.Article:
    article = pb.Article(title=f"Article {unique()}", content_markdown=md, **fields)
    return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article


def update(stub, article: pb.Article, paths: tuple[str, ...], **request) -> pb.Article:
    return stub.UpdateArticle(
        pb.UpdateArticleRequest(article=article, update_mask=mask(*paths), **request)
    ).article


def revisions(stub, article_id: str) -> list[pb.ArticleRevision]:
    request = pb.ListArticleRevisionsRequest(article_id=article_id)
    return list(stub.ListArticleRevisions(request).revisions)


def apply_diff(old: str, diff: str) -> str:
    """Apply a unified diff strictly (every context and removed line must match)."""
    lines, out, pos, i = old.splitlines(keepends=True), [], 0, 2
    patch = diff.splitlines(keepends=True)
    while i < len(patch):
        header = re.match(r"@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@\n", patch[i])
        assert header, patch[i]
        start = int(header[1]) - (1 if header[2] != "0" else 0)
        out += lines[pos:start]
        pos, i = start, i + 1
        while i < len(patch) and not patch[i].startswith("@@"):
            mark, body = patch[i][0], patch[i][1:]
            if i + 1 < len(patch) and patch[i + 1].startswith("\\ No newline"):
                body, i = body[:-1], i + 1
            if mark in " -":
                assert lines[pos] == body
                pos += 1
            if mark in " +":
                out.append(body)
            i += 1
    return "".join(out + lines[pos:])


class TestProvenance:
    def test_user_edit_records_actor_and_request_id(self, alice):
        account, stub = alice
        article = pb.Article(title=f"Prov {unique()}", content_markdown="first\n")
        created, create_id = with_request_id(
            stub.CreateArticle, pb.CreateArticleRequest(article=article), rid("create")
        )
        assert created.provenance == pb.Provenance(
            actor_kind=common_pb2.PRINCIPAL_KIND_USER, actor_id=account.id, request_id=create_id
        )
        edit = pb.Article(id=created.id, content_markdown="second\n")
        request = pb.UpdateArticleRequest(article=edit, update_mask=mask("content_markdown"))
        edit_id = rid("edit")
        updated, answered = with_request_id(stub.UpdateArticle, request, edit_id)
        assert answered == edit_id
        assert updated.provenance.request_id == edit_id
        assert updated.provenance.actor_id == account.id
        assert stub.GetArticle(pb.GetArticleRequest(id=created.id)).article.provenance == (
            updated.provenance
        )
        (revision,) = revisions(stub, created.id)
        # The revision keeps the first version and who made it; actor_id replaced it.
        assert revision.article.content_markdown == "first\n"
        assert revision.provenance == created.provenance
        assert revision.article.provenance == created.provenance
        assert revision.actor_id == account.id

    def test_server_assigned_request_id_is_the_one_recorded(self, alice):
        _, stub = alice
        request = pb.CreateArticleRequest(article=pb.Article(title=f"Anon {unique()}"))
        response, call = stub.CreateArticle.with_call(request)
        assigned = dict(call.trailing_metadata())["x-request-id"]
        assert assigned and response.article.provenance.request_id == assigned

    def test_service_pipeline_edit_with_stage(self, alice, service):
        account, stub = alice
        articles, _ = service
        pipeline_id = new_pipeline(service, account.id)
        article = create(stub, pipeline_id=pipeline_id)
        edit = pb.Article(id=article.id, title="Optimised")
        updated, answered = with_request_id(
            articles.UpdateArticle,
            pb.UpdateArticleRequest(
                article=edit, update_mask=mask("title"), pipeline_stage="seo_optimization"
            ),
            rid("seo"),
        )
        assert updated.provenance == pb.Provenance(
            actor_kind=common_pb2.PRINCIPAL_KIND_SERVICE, actor_name="crawler",
            request_id=answered, pipeline_id=pipeline_id, pipeline_stage="seo_optimization",
        )  # fmt: skip
        # Another run of the same user's, named on the request, with its stage.
        other_run = new_pipeline(service, account.id)
        again = update(
            articles, pb.Article(id=article.id, title="Checked"), ("title",),
            pipeline_stage="fact_check_report", pipeline_id=other_run,
        )  # fmt: skip
        assert (again.provenance.pipeline_id, again.provenance.pipeline_stage) == (
            other_run, "fact_check_report",
        )  # fmt: skip
        assert again.pipeline_id == pipeline_id  # the article's own link is unchanged
        newest, older = revisions(stub, article.id)
        assert newest.provenance == updated.provenance
        assert older.provenance.actor_kind == common_pb2.PRINCIPAL_KIND_USER
        assert newest.actor_id == ""  # replaced by a service

    def test_pipeline_checks(self, alice, new_account, service):
        account, stub = alice
        article = create(stub)  # no pipeline
        edit = pb.Article(id=article.id, title="x")

        def attempt(**request):
            return details_of(lambda: update(stub, edit, ("title",), **request))

        error = attempt(pipeline_stage="seo_optimization")
        assert error.code is Code.INVALID_ARGUMENT and "pipeline_stage" in error.field_violations
        error = attempt(pipeline_stage="made_up_stage")
        assert "pipeline_stage" in error.field_violations
        assert attempt(pipeline_id="not-a-uuid").field_violations.keys() == {"pipeline_id"}
        strangers = new_pipeline(service, new_account().id)
        assert attempt(pipeline_id=strangers).code is Code.NOT_FOUND
        assert attempt(pipeline_id=str(uuid.uuid4())).code is Code.NOT_FOUND
        # Create: the stage needs the article's pipeline_id.
        request = pb.CreateArticleRequest(
            article=pb.Article(title="Draft"), pipeline_stage="article_draft"
        )
        error = details_of(lambda: stub.CreateArticle(request))
        assert error.code is Code.INVALID_ARGUMENT and "pipeline_stage" in error.field_violations
        masked = details_of(lambda: update(stub, edit, ("provenance",)))
        assert masked.code is Code.INVALID_ARGUMENT and "update_mask" in masked.field_violations

    def test_create_and_batch_with_stage(self, alice, service):
        account, stub = alice
        pipeline_id = new_pipeline(service, account.id)
        article = pb.Article(title=f"Drafted {unique()}", pipeline_id=pipeline_id)
        created = stub.CreateArticle(
            pb.CreateArticleRequest(article=article, pipeline_stage="article_draft")
        ).article
        assert (created.provenance.pipeline_id, created.provenance.pipeline_stage) == (
            pipeline_id, "article_draft",
        )  # fmt: skip
        plain = create(stub, pipeline_id=pipeline_id)  # created by the run, no stage named
        assert (plain.provenance.pipeline_id, plain.provenance.pipeline_stage) == (pipeline_id, "")
        batch = [
            pb.Article(title=f"B {unique()}", pipeline_id=pipeline_id),
            pb.Article(title=f"B {unique()}"),
        ]
        request = pb.BatchCreateArticlesRequest(articles=batch, pipeline_stage="article_draft")
        error = details_of(lambda: stub.BatchCreateArticles(request))
        assert error.field_violations.keys() == {"articles[1].pipeline_id"}
        request.articles[1].pipeline_id = pipeline_id
        made, answered = with_request_id(stub.BatchCreateArticles, request, rid("batch"))
        assert [a.provenance.pipeline_stage for a in made] == ["article_draft"] * 2
        assert {a.provenance.request_id for a in made} == {answered}

    def test_restore_records_provenance(self, alice, service):
        account, stub = alice
        pipeline_id = new_pipeline(service, account.id)
        article = create(stub, md="original\n", pipeline_id=pipeline_id)
        changed = update(stub, pb.Article(id=article.id, content_markdown="changed\n"),
                         ("content_markdown",))  # fmt: skip
        original = revisions(stub, article.id)[-1]
        request = pb.RestoreArticleRevisionRequest(
            article_id=article.id, revision_id=original.id, pipeline_stage="quality_review"
        )
        restored, answered = with_request_id(stub.RestoreArticleRevision, request, rid("restore"))
        assert restored.content_markdown == "original\n"
        assert restored.provenance == pb.Provenance(
            actor_kind=common_pb2.PRINCIPAL_KIND_USER, actor_id=account.id, request_id=answered,
            pipeline_id=pipeline_id, pipeline_stage="quality_review",
        )  # fmt: skip
        newest = revisions(stub, article.id)[0]  # the version the restore replaced
        assert newest.article.content_markdown == "changed\n"
        assert newest.provenance == changed.provenance

    def test_delete_keeps_provenance_and_publish_records_it(self, alice, service):
        _, stub = alice
        articles, _ = service
        article = create(stub)
        deleted = stub.DeleteArticle(pb.DeleteArticleRequest(id=article.id)).article
        assert deleted.provenance == article.provenance
        undeleted = stub.UndeleteArticle(pb.UndeleteArticleRequest(id=article.id)).article
        published = articles.PublishArticle(
            pb.PublishArticleRequest(id=article.id, etag=undeleted.etag, wp_post_id=7)
        ).article
        assert published.provenance.actor_kind == common_pb2.PRINCIPAL_KIND_SERVICE
        assert revisions(stub, article.id)[0].provenance == article.provenance

    def test_versions_from_before_provenance_show_none(self, alice, owner_engine):
        _, stub = alice
        article = create(stub)
        update(stub, pb.Article(id=article.id, title="Later"), ("title",))
        columns = ", ".join(f"{c} = NULL" for c in (
            "made_by_kind", "made_by_id", "made_by_name", "made_request_id", "made_pipeline_id",
            "made_pipeline_stage",
        ))  # fmt: skip
        with owner_engine.begin() as connection:  # as migration 0016 leaves older rows
            for table, key in (("articles", "id"), ("article_revisions", "article_id")):
                connection.execute(
                    text(f"UPDATE {table} SET {columns} WHERE {key} = :id"), {"id": article.id}
                )
        (revision,) = revisions(stub, article.id)
        assert not revision.HasField("provenance")
        assert not revision.article.HasField("provenance")
        got = stub.GetArticle(pb.GetArticleRequest(id=article.id)).article
        assert not got.HasField("provenance")
        listed = stub.ListArticles(pb.ListArticlesRequest()).articles
        assert not next(a for a in listed if a.id == article.id).HasField("provenance")


class TestGetAndDiff:
    def test_get_revision_whole(self, alice):
        _, stub = alice
        article = create(stub, md="# Old\n\nbody\n", tags=["a"])
        update(stub, pb.Article(id=article.id, content_markdown="# New\n", tags=["b"]),
               ("content_markdown", "tags"))  # fmt: skip
        (listed,) = revisions(stub, article.id)
        request = pb.GetArticleRevisionRequest(article_id=article.id, revision_id=listed.id)
        got = stub.GetArticleRevision(request).revision
        assert got == listed
        assert got.article.content_markdown == "# Old\n\nbody\n" and list(got.article.tags) == ["a"]
        assert got.article.etag == article.etag and got.article.content_html
        request.view = pb.ARTICLE_VIEW_BASIC
        basic = stub.GetArticleRevision(request).revision
        assert basic.article.content_markdown == "" and basic.article.title == article.title

    def test_diff_text_fields_and_etags(self, alice):
        _, stub = alice
        old_md = "# Title\n\nline one\nline two\nline three\n"
        article = create(stub, md=old_md, tags=["seo"])
        new_md = "# Title\n\nline one\nline 2\nline three\nline four"
        current = update(
            stub, pb.Article(id=article.id, title="Renamed", content_markdown=new_md, tags=["x"]),
            ("title", "content_markdown", "tags"),
        )  # fmt: skip
        (revision,) = revisions(stub, article.id)
        request = pb.DiffArticleRevisionRequest(article_id=article.id, revision_id=revision.id)
        diff = stub.DiffArticleRevision(request)
        expected = (
            f"--- revision {revision.id}\n+++ current\n@@ -1,5 +1,6 @@\n # Title\n \n"
            " line one\n-line two\n+line 2\n line three\n+line four\n"
            "\\ No newline at end of file\n"
        )
        assert diff.diff == expected
        assert list(diff.changed_fields) == ["title", "content_markdown", "content_html", "tags"]
        assert (diff.revision_etag, diff.current_etag) == (article.etag, current.etag)
        assert not diff.diff_coarse
        request.context_lines = 0
        assert stub.DiffArticleRevision(request).diff.splitlines()[2:5] == [
            "@@ -4 +4 @@", "-line two", "+line 2",
        ]  # fmt: skip

    def test_diff_matches_difflib(self, alice):
        _, stub = alice
        old_md = "".join(f"paragraph {i}\n\n" for i in range(40))
        new_md = (
            old_md.replace("paragraph 3\n", "paragraph three\n").replace("paragraph 30\n", "")
            + "the end\n"
        )
        article = create(stub, md=old_md)
        update(stub, pb.Article(id=article.id, content_markdown=new_md), ("content_markdown",))
        (revision,) = revisions(stub, article.id)
        request = pb.DiffArticleRevisionRequest(
            article_id=article.id, revision_id=revision.id, context_lines=2
        )
        reference = difflib.unified_diff(
            old_md.splitlines(keepends=True), new_md.splitlines(keepends=True),
            f"revision {revision.id}", "current", n=2,
        )  # fmt: skip
        assert stub.DiffArticleRevision(request).diff == "".join(reference)

    def test_unchanged_is_an_empty_diff(self, alice):
        _, stub = alice
        article = create(stub, md="same\n")
        update(stub, pb.Article(id=article.id, status=pb.ARTICLE_STATUS_ARCHIVED), ("status",))
        (revision,) = revisions(stub, article.id)
        request = pb.DiffArticleRevisionRequest(article_id=article.id, revision_id=revision.id)
        diff = stub.DiffArticleRevision(request)
        assert diff.diff == "" and list(diff.changed_fields) == ["status"]
        restore = pb.RestoreArticleRevisionRequest(article_id=article.id, revision_id=revision.id)
        stub.RestoreArticleRevision(restore)  # content as in the revision; status stays
        update(stub, pb.Article(id=article.id, status=pb.ARTICLE_STATUS_DRAFT), ("status",))
        diff = stub.DiffArticleRevision(request)
        assert diff.diff == "" and list(diff.changed_fields) == []

    def test_big_documents_are_bounded(self, alice):
        """Two different 2 MiB documents whose lines defeat difflib (each of ~120 lines
        recurs a thousand times, in different orders: unbounded, minutes or more): a coarse diff
        that still applies, quickly. One changed line in such a document stays exact."""
        _, stub = alice

        def cyclic(step: int) -> str:  # 16-byte lines: 131,072 of them
            return "".join(f"{(i * step) % 120:03d} -----------\n" for i in range(MiB // 16))

        old_md, new_md = cyclic(1), cyclic(7)
        assert len(old_md) == len(new_md) == MiB
        article = create(stub, md=old_md)
        update(stub, pb.Article(id=article.id, content_markdown=new_md), ("content_markdown",))
        (revision,) = revisions(stub, article.id)
        request = pb.DiffArticleRevisionRequest(article_id=article.id, revision_id=revision.id)
        started = time.monotonic()
        diff = stub.DiffArticleRevision(request)
        elapsed = time.monotonic() - started
        assert diff.diff_coarse and elapsed < 10, elapsed
        assert apply_diff(old_md, diff.diff) == new_md
        middle = MiB // 2
        one_line = old_md[:middle] + "changed line 16\n" + old_md[middle + 16 :]
        update(stub, pb.Article(id=article.id, content_markdown=one_line), ("content_markdown",))
        first = revisions(stub, article.id)[-1]
        request.revision_id = first.id
        small = stub.DiffArticleRevision(request)
        assert not small.diff_coarse
        assert [line for line in small.diff.splitlines() if line[:1] in "+-"] == [
            f"--- revision {first.id}", "+++ current",
            f"-{old_md[middle : middle + 15]}", "+changed line 16",
        ]  # fmt: skip

    def test_bad_ids_name_the_field(self, alice):
        _, stub = alice
        error = details_of(
            lambda: stub.GetArticleRevision(
                pb.GetArticleRevisionRequest(article_id="nope", revision_id="")
            )
        )
        assert error.code is Code.INVALID_ARGUMENT
        assert error.field_violations.keys() == {"article_id", "revision_id"}
        error = details_of(
            lambda: stub.DiffArticleRevision(
                pb.DiffArticleRevisionRequest(article_id=str(uuid.uuid4()), revision_id="x")
            )
        )
        assert error.field_violations.keys() == {"revision_id"}
        for lines in (-1, 1001):
            request = pb.DiffArticleRevisionRequest(
                article_id=str(uuid.uuid4()), revision_id=str(uuid.uuid4()), context_lines=lines
            )
            error = details_of(lambda r=request: stub.DiffArticleRevision(r))
            assert error.field_violations.keys() == {"context_lines"}

    def test_isolation(self, alice, new_account, connect):
        account, stub = alice
        article = create(stub, md="secret\n")
        update(stub, pb.Article(id=article.id, content_markdown="more\n"), ("content_markdown",))
        (revision,) = revisions(stub, article.id)
        other = create(stub)
        update(stub, pb.Article(id=other.id, title="Other"), ("title",))
        (other_revision,) = revisions(stub, other.id)
        bob = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
        bobs = create(bob)
        ids = {"article_id": article.id, "revision_id": revision.id}
        calls = {
            "list": lambda s: s.ListArticleRevisions(
                pb.ListArticleRevisionsRequest(article_id=article.id)
            ),
            "get": lambda s, **k: s.GetArticleRevision(pb.GetArticleRevisionRequest(**k)),
            "diff": lambda s, **k: s.DiffArticleRevision(pb.DiffArticleRevisionRequest(**k)),
            "restore": lambda s, **k: s.RestoreArticleRevision(
                pb.RestoreArticleRevisionRequest(**k)
            ),
        }
        assert status_of(lambda: calls["list"](bob)) is Code.NOT_FOUND
        for name in ("get", "diff", "restore"):
            call = calls[name]
            assert status_of(lambda c=call: c(bob, **ids)) is Code.NOT_FOUND, name
            # Bob's own article with Alice's revision id.
            mixed = {"article_id": bobs.id, "revision_id": revision.id}
            assert status_of(lambda c=call, m=mixed: c(bob, **m)) is Code.NOT_FOUND, name
            # Alice's own revision of another of her articles.
            crossed = {"article_id": article.id, "revision_id": other_revision.id}
            assert status_of(lambda c=call, x=crossed: c(stub, **x)) is Code.NOT_FOUND, name
        assert stub.GetArticleRevision(pb.GetArticleRevisionRequest(**ids)).revision.id
        assert stub.GetArticle(pb.GetArticleRequest(id=article.id)).article.content_markdown == (
            "more\n"
        )  # nothing was restored
        assert account.id


def test_diffs_apply_and_match_difflib():
    """storage/revision_diff on many small random pairs: every diff applies exactly; within
    the budget it is difflib.unified_diff's; with no budget it still applies (coarse)."""
    chance = random.Random(16)
    for _ in range(400):
        old, new = (
            "".join(f"l{chance.randint(0, 5)}\n" for _ in range(chance.randint(0, 30)))
            for _ in range(2)
        )
        context = chance.randint(0, 4)
        exact = unified_diff(old, new, old_label="a", new_label="b", context=context)
        reference = difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), "a", "b", n=context
        )
        assert exact.text == "".join(reference) and not exact.coarse
        cut = old.rstrip("\n") if chance.random() < 0.5 else old
        coarse = unified_diff(cut, new, old_label="a", new_label="b", context=context, budget=0)
        assert apply_diff(cut, coarse.text) == new
    coarse = unified_diff("a\nb\nc\n", "a\nB\nc", old_label="x", new_label="y", budget=0)
    assert coarse.coarse and coarse.text == (
        "--- x\n+++ y\n@@ -1,3 +1,3 @@\n a\n-b\n-c\n+B\n+c\n\\ No newline at end of file\n"
    )

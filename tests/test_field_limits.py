"""Each field limit is declared once: the columns and the servicers take it from one place."""

from __future__ import annotations

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc

from storage import content, rules
from storage.models import ApiKey, Article, Competitor, CompetitorArticle, UsageEvent, User
from storage.models.competitors import MAX_AUTHOR_LENGTH, MAX_NAME_LENGTH
from storage.models.usage import EVENT_TEXT_LIMITS
from storage.models.users import API_KEY_TEXT_LIMITS, MAX_EMAIL_LENGTH, MAX_USERNAME_LENGTH
from tests.support import details_of


def _length(model: type, column: str) -> int | None:
    return model.__table__.c[column].type.length


@pytest.mark.parametrize(
    ("model", "limits"),
    [
        (Article, {k: v for k, v in rules.ARTICLE_TEXT_LIMITS.items() if k != "excerpt"}),
        (Article, {"slug": content.MAX_SLUG_LENGTH}),
        (Competitor, {"name": MAX_NAME_LENGTH}),
        (CompetitorArticle, {"author": MAX_AUTHOR_LENGTH}),
        (UsageEvent, EVENT_TEXT_LIMITS),
        (ApiKey, API_KEY_TEXT_LIMITS),
        (User, {"email": MAX_EMAIL_LENGTH, "username": MAX_USERNAME_LENGTH}),
    ],
)
def test_columns_are_as_wide_as_the_declared_limits(model, limits):
    assert {name: _length(model, name) for name in limits} == limits


@pytest.fixture
def stub(new_account, connect):
    return articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))


def test_publish_checks_the_limits_storage_declares(stub, monkeypatch):
    """PublishArticle follows storage/rules.py, not a copy of its numbers."""
    article = stub.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title="Limits", content_markdown="x"))
    ).article
    monkeypatch.setitem(rules.ARTICLE_TEXT_LIMITS, "wp_status", 5)
    monkeypatch.setitem(rules.ARTICLE_TEXT_LIMITS, "wp_url", 12)
    request = pb.PublishArticleRequest(
        id=article.id, etag=article.etag, wp_url="https://blog.x/p", wp_status="future"
    )
    error = details_of(lambda: stub.PublishArticle(request))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == {
        "wp_url": "must be at most 12 characters",
        "wp_status": "must be at most 5 characters",
    }
    request = pb.PublishArticleRequest(id=article.id, etag=article.etag, wp_url="ftp://x")
    error = details_of(lambda: stub.PublishArticle(request))
    assert error.field_violations == {"wp_url": "must be an http(s) URL"}


def test_username_rule_follows_the_declared_lengths():
    from server.services.users import check_username
    from storage.models.users import MIN_USERNAME_LENGTH
    from storage.rules import Violations

    v = Violations()
    check_username(v, "u", "a" * MAX_USERNAME_LENGTH)
    check_username(v, "short", "a" * (MIN_USERNAME_LENGTH - 1))
    check_username(v, "long", "a" * (MAX_USERNAME_LENGTH + 1))
    assert set(v.fields) == {"short", "long"}
    assert v.fields["long"].startswith(f"must be {MIN_USERNAME_LENGTH}-{MAX_USERNAME_LENGTH} ")

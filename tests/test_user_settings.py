"""GetUserSettings / UpdateUserSettings through the real server: defaults without a row, field
masks, etags, validation naming fields, isolation between users, audit."""

from __future__ import annotations

import threading

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from tests.support import SERVICE_KEY, details_of, status_of

Code = grpc.StatusCode
S = users_pb2.UserSettings
Status = users_pb2.WordpressPostStatus


def update(stub, mask: list[str], **fields) -> users_pb2.UserSettings:
    request = users_pb2.UpdateUserSettingsRequest(
        settings=S(**fields), update_mask=field_mask_pb2.FieldMask(paths=mask)
    )
    return stub.UpdateUserSettings(request).settings


def get(stub, user_id: str = "") -> users_pb2.UserSettings:
    return stub.GetUserSettings(users_pb2.GetUserSettingsRequest(user_id=user_id)).settings


@pytest.fixture(scope="module")
def service(connect) -> users_pb2_grpc.UsersServiceStub:
    return users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))


def rows(owner_engine, user_id: str) -> int:
    with owner_engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM user_settings WHERE user_id = :u"), {"u": user_id}
        )


def test_a_user_without_settings_reads_the_defaults(new_account, owner_engine):
    account = new_account()
    settings = get(account.stub)
    assert settings.user_id == account.id
    assert settings.default_publish_status == Status.WORDPRESS_POST_STATUS_DRAFT
    assert (settings.wordpress_site_url, settings.wordpress_username) == ("", "")
    assert list(settings.default_tags) == [] and list(settings.preferred_models) == []
    assert settings.usage_alert_percent == 0
    assert settings.etag == '"0"' and not settings.HasField("update_time")
    assert rows(owner_engine, account.id) == 0  # reading stores nothing


def test_update_changes_only_the_masked_fields(new_account):
    account = new_account()
    first = update(
        account.stub,
        ["wordpress_site_url", "default_tags", "default_publish_status"],
        wordpress_site_url="https://blog.example.com",
        wordpress_username="not-in-the-mask",
        default_tags=["seo", " python "],
        default_publish_status=Status.WORDPRESS_POST_STATUS_PENDING,
        usage_alert_percent=50,
    )
    assert first.wordpress_site_url == "https://blog.example.com"
    assert list(first.default_tags) == ["seo", "python"]
    assert first.default_publish_status == Status.WORDPRESS_POST_STATUS_PENDING
    assert first.wordpress_username == "" and first.usage_alert_percent == 0
    assert first.etag == '"1"' and first.HasField("update_time")
    second = update(
        account.stub,
        ["preferred_models", "usage_alert_percent", "wordpress_username"],
        preferred_models=["gpt-4o", "claude-sonnet"],
        usage_alert_percent=80,
        wordpress_username="editor",
        etag=first.etag,
    )
    assert second.etag == '"2"'
    assert second.wordpress_site_url == "https://blog.example.com"  # kept
    assert list(second.preferred_models) == ["gpt-4o", "claude-sonnet"]  # order kept
    assert get(account.stub) == second


def test_an_empty_field_in_the_mask_returns_to_its_default(new_account):
    account = new_account()
    update(
        account.stub,
        ["default_publish_status", "usage_alert_percent", "default_tags"],
        default_publish_status=Status.WORDPRESS_POST_STATUS_PUBLISH,
        usage_alert_percent=90,
        default_tags=["a"],
    )
    reset = update(account.stub, ["default_publish_status", "usage_alert_percent", "default_tags"])
    assert reset.default_publish_status == Status.WORDPRESS_POST_STATUS_DRAFT
    assert reset.usage_alert_percent == 0 and list(reset.default_tags) == []


def test_a_stale_etag_is_aborted(new_account):
    account = new_account()
    update(account.stub, ["usage_alert_percent"], usage_alert_percent=10, etag='"0"')
    stale = details_of(
        lambda: update(account.stub, ["usage_alert_percent"], usage_alert_percent=20, etag='"0"')
    )
    assert stale.code is Code.ABORTED and stale.reason == "CONFLICT"
    assert get(account.stub).usage_alert_percent == 10
    assert update(account.stub, ["usage_alert_percent"], usage_alert_percent=30).etag == '"2"'


def test_two_first_writers_with_the_same_etag_one_wins(new_account):
    account = new_account()
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def write(percent: int) -> None:
        barrier.wait()
        try:
            update(account.stub, ["usage_alert_percent"], usage_alert_percent=percent, etag='"0"')
            outcomes.append(percent)
        except grpc.RpcError as error:
            outcomes.append(error.code())

    threads = [threading.Thread(target=write, args=(p,)) for p in (40, 60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1 and Code.ABORTED in outcomes, outcomes
    assert get(account.stub).usage_alert_percent == winners[0]


@pytest.mark.parametrize(
    ("mask", "fields", "bad_field"),
    [
        (["wordpress_site_url"], {"wordpress_site_url": "ftp://example.com"}, "wordpress_site_url"),
        (["wordpress_site_url"], {"wordpress_site_url": "example.com"}, "wordpress_site_url"),
        (["wordpress_site_url"], {"wordpress_site_url": "https://"}, "wordpress_site_url"),
        (["wordpress_site_url"], {"wordpress_site_url": "https://a b.com"}, "wordpress_site_url"),
        (
            ["wordpress_site_url"],
            {"wordpress_site_url": "https://example.com/" + "x" * 2000},
            "wordpress_site_url",
        ),
        (["wordpress_username"], {"wordpress_username": "u" * 61}, "wordpress_username"),
        (["default_tags"], {"default_tags": ["t"] * 51}, "default_tags"),
        (["default_tags"], {"default_tags": ["ok", " "]}, "default_tags"),
        (["default_tags"], {"default_tags": ["x" * 101]}, "default_tags"),
        (["preferred_models"], {"preferred_models": ["m"] * 21}, "preferred_models"),
        (["usage_alert_percent"], {"usage_alert_percent": 101}, "usage_alert_percent"),
        (["usage_alert_percent"], {"usage_alert_percent": -1}, "usage_alert_percent"),
        (["default_publish_status"], {"default_publish_status": 99}, "default_publish_status"),
    ],
)
def test_bad_values_are_named(new_account, mask, fields, bad_field):
    account = new_account()
    error = details_of(lambda: update(account.stub, mask, **fields))
    assert error.code is Code.INVALID_ARGUMENT
    assert f"settings.{bad_field}" in error.field_violations, error.field_violations
    assert get(account.stub).etag == '"0"'  # nothing stored


@pytest.mark.parametrize("mask", [[], ["etag"], ["user_id"], ["update_time"], ["bogus"]])
def test_bad_masks_are_named(new_account, mask):
    account = new_account()
    error = details_of(lambda: update(account.stub, mask))
    assert error.code is Code.INVALID_ARGUMENT and "update_mask" in error.field_violations


def test_a_user_cannot_read_or_change_another_users_settings(new_account):
    a, b = new_account(), new_account()
    update(b.stub, ["wordpress_username"], wordpress_username="bee")
    assert status_of(lambda: get(a.stub, b.id)) is Code.NOT_FOUND
    assert (
        status_of(
            lambda: update(a.stub, ["wordpress_username"], user_id=b.id, wordpress_username="evil")
        )
        is Code.NOT_FOUND
    )
    assert get(b.stub).wordpress_username == "bee"


def test_admins_and_services_act_for_any_user(new_account, admin_users, service):
    account = new_account()
    by_admin = update(
        admin_users, ["wordpress_site_url"], user_id=account.id,
        wordpress_site_url="http://example.org",
    )  # fmt: skip
    assert by_admin.user_id == account.id
    seen = get(service, account.id)
    assert seen.wordpress_site_url == "http://example.org" and seen.etag == by_admin.etag
    update(service, ["usage_alert_percent"], user_id=account.id, usage_alert_percent=75)
    assert get(account.stub).usage_alert_percent == 75
    # A service must say whose settings; an unknown user is NOT_FOUND.
    error = details_of(lambda: get(service))
    assert error.code is Code.INVALID_ARGUMENT and "user_id" in error.field_violations
    unknown = "00000000-0000-4000-8000-000000000000"
    assert status_of(lambda: get(admin_users, unknown)) is Code.NOT_FOUND


def test_updates_are_audited_with_the_masked_fields(new_account, admin_users):
    account = new_account()
    update(
        admin_users, ["default_tags", "usage_alert_percent"], user_id=account.id,
        default_tags=["x"], usage_alert_percent=5,
    )  # fmt: skip
    events = account.stub.ListAuditEvents(
        users_pb2.ListAuditEventsRequest(action="user_settings.update")
    ).events
    assert len(events) == 1
    assert events[0].user_id == account.id and events[0].resource_type == "user_settings"
    assert list(events[0].details["fields"]) == ["default_tags", "usage_alert_percent"]


def test_purging_the_user_deletes_its_settings(new_account, admin_users, owner_engine):
    account = new_account()
    update(account.stub, ["wordpress_username"], wordpress_username="gone")
    assert rows(owner_engine, account.id) == 1
    admin_users.DeleteUser(users_pb2.DeleteUserRequest(id=account.id, purge=True))
    assert rows(owner_engine, account.id) == 0

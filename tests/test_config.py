"""Settings from the environment: defaults, validation, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, Settings, parse_service_keys
from storage.credentials import digest


def test_defaults():
    settings = Settings.from_env({})
    assert settings.port == 50051 and settings.workers == 1
    assert settings.bcrypt_rounds == 12 and not settings.allow_registration
    assert settings.database_url is None
    assert settings.pool_size == settings.threads  # pool >= workers


def test_reads_every_documented_variable():
    env = {
        "DATABASE_URL": "postgresql://u:pw@db/x",
        "BLOGSTORE_DATA_DIR": "/srv/blogstore",
        "BLOGSTORE_PORT": "6000",
        "BLOGSTORE_WORKERS": "3",
        "BLOGSTORE_THREADS": "4",
        "BLOGSTORE_DB_POOL_SIZE": "9",
        "BLOGSTORE_BCRYPT_ROUNDS": "13",
        "BLOGSTORE_ALLOW_REGISTRATION": "true",
        "BLOGSTORE_SERVICE_KEYS": "crawler:aaaaaaaaaaaaaaaa,crawler:bbbbbbbbbbbbbbbb",
        "BLOGSTORE_PAGE_TOKEN_SECRET": "shh",
        "BLOGSTORE_LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env)
    assert settings.data_dir == Path("/srv/blogstore")
    assert (settings.port, settings.workers, settings.threads) == (6000, 3, 4)
    assert settings.pool_size == 9 and settings.bcrypt_rounds == 13
    assert settings.allow_registration and settings.log_format == "json"
    assert [k.name for k in settings.service_keys] == ["crawler", "crawler"]
    assert settings.page_token_secret == b"shh"
    assert "pw" not in repr(settings) and "aaaa" not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"BLOGSTORE_PORT": "http"},
        {"BLOGSTORE_BCRYPT_ROUNDS": "10"},  # below the floor of 12
        {"BLOGSTORE_ALLOW_REGISTRATION": "maybe"},
        {"BLOGSTORE_LOG_FORMAT": "xml"},
        {"BLOGSTORE_SERVICE_KEYS": "no-colon"},
        {"BLOGSTORE_SERVICE_KEYS": "crawler:short"},
    ],
)
def test_rejects_bad_values(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_service_keys_are_kept_as_digests_only():
    (key,) = parse_service_keys("crawler:0123456789abcdef")
    assert key.digest == digest("0123456789abcdef")
    assert "0123456789abcdef" not in repr(key)


@pytest.mark.parametrize(
    ("raw", "micros"), [("50.00", 50_000_000), ("0.000001", 1), ("12", 12_000_000)]
)
def test_dollar_limits_are_parsed_exactly(raw, micros):
    env = {"BLOGSTORE_DEFAULT_MONTHLY_COST_LIMIT": raw}
    assert Settings.from_env(env).default_monthly_cost_limit_micros == micros


@pytest.mark.parametrize("raw", ["-1", "0", "0.0000001", "lots"])
def test_bad_dollar_limits(raw):
    with pytest.raises(ConfigError):
        Settings.from_env({"BLOGSTORE_DEFAULT_MONTHLY_COST_LIMIT": raw})

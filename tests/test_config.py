"""Settings from the environment: defaults, validation, and secrets kept out of repr."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError, Settings, parse_service_keys, variable_name
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
    assert settings.page_token_secret.get_secret_value() == b"shh"
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
        {"BLOGSTORE_LOG_LEVEL": "verbose"},
        {"BLOGSTORE_HEALTH_INTERVAL_SECONDS": "0"},  # would poll the database in a tight loop
        {"BLOGSTORE_DB_POOL_TIMEOUT_SECONDS": "-1"},
        {"BLOGSTORE_METRICS_PORT": "65536"},
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


def test_every_bad_value_is_one_line_naming_the_variable_and_its_range():
    env = {"BLOGSTORE_PORT": "99999", "BLOGSTORE_LOG_LEVEL": "verbose", "DATABASE_URL": "x"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**env, "BLOGSTORE_SERVICE_KEYS": "crawler:short-secret"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert "BLOGSTORE_PORT: must be between 0 and 65535 (got '99999')" in lines
    assert any(line.startswith("BLOGSTORE_LOG_LEVEL: input should be 'DEBUG'") for line in lines)
    assert any(line.startswith("BLOGSTORE_SERVICE_KEYS: entries are name:key") for line in lines)
    assert "short-secret" not in str(caught.value)  # a secret is never echoed


def test_the_cli_exits_2_without_a_traceback():
    env = {"BLOGSTORE_PORT": "http", "BLOGSTORE_HEALTH_INTERVAL_SECONDS": "0", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "blogstore: configuration error: BLOGSTORE_PORT: must be between 0 and 65535 (got 'http')",
        "blogstore: configuration error: BLOGSTORE_HEALTH_INTERVAL_SECONDS: "
        "must be between 0.1 and 3600 (got '0')",
    ]


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "server", "--version"], capture_output=True, text=True, check=True
    )
    assert re.fullmatch(r"blogstore \S+ \(schema \d{4}\)\n", result.stdout)


def test_every_option_has_help():
    from server.cli import _parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [
        f"{parser.prog} {action.dest}"
        for parser in parsers(_parser())
        for action in parser._actions
        if not action.help and action.dest not in ("help", "command")
    ]
    assert missing == []


# Documented variables read by something other than Settings.
NOT_SETTINGS = re.compile(r"BLOGSTORE_TEST_\w+|BLOGSTORE_BENCH_\w+|OTEL_\w+|PROMETHEUS_\w+")


def test_the_readme_documents_every_setting_and_nothing_else():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.MULTILINE)
    assert len(documented) == len(set(documented)), "a variable is documented twice"
    declared = {variable_name(name) for name in Settings.model_fields}
    assert declared - set(documented) == set(), "settings missing from the README table"
    extra = {
        name for name in documented if name not in declared and not NOT_SETTINGS.fullmatch(name)
    }
    assert extra == set(), "the README documents variables that are not settings"


def test_every_readme_code_block_is_closed():
    """An unclosed fence renders every later block inside out: each opening fence (with or
    without a language) must meet a bare closing fence before the next one opens."""
    readme = (Path(__file__).parent.parent / "README.md").read_text().splitlines()
    fences = [(number, line) for number, line in enumerate(readme, 1) if line.startswith("```")]
    openings, closings = fences[::2], fences[1::2]
    assert len(openings) == len(closings), f"unclosed fence at line {openings[-1][0]}"
    for (opened, _), (closed, line) in zip(openings, closings, strict=True):
        assert line == "```", f"the block opened at line {opened} is not closed before {closed}"

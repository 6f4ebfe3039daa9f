"""Throwaway certificates for the TLS tests, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _issue(directory: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> None:
    key, csr, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".ext"))
    _openssl("req", "-new", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-out", directory / f"{name}.pem", "-extfile", ext,
    )  # fmt: skip


def make_pki(directory: Path, label: str = "test") -> Pki:
    """A fresh CA named after `label`; the server certificate may also serve as a client's."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", f"/CN=blogstore {label} CA",
        "-addext", "basicConstraints=critical,CA:true",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _issue(
        directory, "server", ca, ca_key,
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "extendedKeyUsage=serverAuth,clientAuth\n",
    )  # fmt: skip
    _issue(directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=ca,
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )

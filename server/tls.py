"""The listening port: TLS or mutual TLS from settings, certificates re-read when files change.

grpcio asks `CertificateFiles.fetch` before every new connection's handshake; it answers with a
new configuration when the files' contents changed and None otherwise, so a renewed
certificate (cert-manager, a rotated Kubernetes Secret) is served without a restart.
Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import ConfigError, Settings

if TYPE_CHECKING:  # grpc is imported where it is used: `serve` checks the files before it
    import grpc  # installs its signal handlers, and must get there quickly

log = logging.getLogger(__name__)

CERT_VARIABLE = "BLOGSTORE_TLS_CERT_FILE"
KEY_VARIABLE = "BLOGSTORE_TLS_KEY_FILE"
CLIENT_CA_VARIABLE = "BLOGSTORE_TLS_CLIENT_CA_FILE"


@dataclass(frozen=True)
class _Pem:
    cert: bytes
    key: bytes
    client_ca: bytes | None


def read_pem(variable: str, path: Path, marker: bytes = b"-----BEGIN CERTIFICATE-----") -> bytes:
    """The file's bytes; a ConfigError naming the variable if unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror or error}") from None
    if marker not in data:
        kind = "certificate" if b"CERTIFICATE" in marker else "private key"
        raise ConfigError(f"{variable}: {path} holds no PEM {kind}")
    return data


class CertificateFiles:
    """The certificate, key and optional client CA files, read now and on every change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._current = self._read()  # raises ConfigError: the server does not start
        self._last_error = ""

    def _read(self) -> _Pem:
        return _Pem(
            cert=read_pem(CERT_VARIABLE, self.cert),
            key=read_pem(KEY_VARIABLE, self.key, b"PRIVATE KEY-----"),
            client_ca=read_pem(CLIENT_CA_VARIABLE, self.client_ca) if self.client_ca else None,
        )

    @staticmethod
    def _configuration(pem: _Pem) -> grpc.ServerCertificateConfiguration:
        import grpc

        return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], pem.client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        import grpc

        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._current),
            self.fetch,  # pyright: ignore[reportArgumentType]  # None means "unchanged" (grpc docs)
            require_client_authentication=self.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's callback: a new configuration if the files changed, else None.

        A file caught half-written or missing keeps the current certificate (warned once); a
        certificate that does not match its key is refused by grpcio, which keeps the current
        one, and the next change to either file is tried again.
        """
        with self._lock:
            try:
                pem = self._read()
            except ConfigError as error:
                if str(error) != self._last_error:
                    log.warning("TLS files unusable, keeping the current certificate: %s", error)
                    self._last_error = str(error)
                return None
            self._last_error = ""
            if pem == self._current:
                return None
            self._current = pem
        log.info("TLS files changed: new connections use the certificate in %s", self.cert)
        return self._configuration(pem)


def certificate_files(settings: Settings) -> CertificateFiles | None:
    """None for plaintext; a ConfigError (one line, naming the variable) for a bad set-up."""
    cert, key, client_ca = (
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(f"{CLIENT_CA_VARIABLE} needs {CERT_VARIABLE} and {KEY_VARIABLE}")
        return None
    if cert is None:
        raise ConfigError(f"{CERT_VARIABLE} must be set when {KEY_VARIABLE} is (TLS needs both)")
    if key is None:
        raise ConfigError(f"{KEY_VARIABLE} must be set when {CERT_VARIABLE} is (TLS needs both)")
    return CertificateFiles(cert, key, client_ca)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; a wildcard or any other name is not."""
    name = host.strip().removeprefix("[").removesuffix("]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def add_port(server: grpc.Server, settings: Settings) -> int:
    """Binds settings.host:port with TLS if configured; returns the port (0: bind failed)."""
    address = f"{settings.host}:{settings.port}"
    files = certificate_files(settings)
    if files is None:
        port = server.add_insecure_port(address)
        if port and not is_loopback(settings.host):
            log.warning(
                "listening in plaintext on %s:%d, beyond loopback: bearer tokens cross the "
                "network unencrypted; set %s and %s to serve TLS",
                settings.host, port, CERT_VARIABLE, KEY_VARIABLE,
            )  # fmt: skip
        return port
    port = server.add_secure_port(address, files.credentials())
    if port:
        mode = "mutual TLS (client certificates required)" if files.client_ca else "TLS"
        log.info("serving %s with the certificate in %s", mode, files.cert)
    return port

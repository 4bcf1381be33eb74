"""TLS for every server and channel: credentials from PEM files, and a small PKI maker.

Servers take `--tls-cert/--tls-key` (and, for mutual TLS, `--tls-client-ca`: callers
must then present a certificate that CA signed); clients take `--tls-ca` and, for
mutual TLS, their own `--tls-cert/--tls-key`. grpc does the protocol; `cryptography`
makes certificates for tests and for `metalearn certs`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsError(ValueError):
    """A TLS file is missing or unreadable."""


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TlsError(f"cannot read the {what} {path}: {err.strerror}") from err


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key; with `client_ca`, callers must show a certificate."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        key, cert = _read(self.key, "TLS key"), _read(self.cert, "TLS certificate")
        assert key is not None and cert is not None
        ca = _read(self.client_ca, "client CA")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass(frozen=True)
class ClientTls:
    """What a client trusts (`ca`; None: the system's roots) and, for mutual TLS, the
    certificate it shows."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # Check the server's certificate against this name instead of the address's host.
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "TLS CA"),
            private_key=_read(self.key, "TLS key"),
            certificate_chain=_read(self.cert, "TLS certificate"),
        )

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def add_flags(parser: argparse.ArgumentParser, *, server: bool, inherit: bool = False) -> None:
    """The TLS flags of a command (each falls back on a METALEARN_TLS_* variable).

    `inherit`: on a subcommand whose parent parser has them too, so that an unset flag
    keeps the value given before the subcommand's name."""
    default: dict[str, object] = {"default": argparse.SUPPRESS} if inherit else {}
    parser.add_argument(
        "--tls-cert",
        help="this process's certificate, PEM (served; shown for mutual TLS)",
        **default,  # type: ignore[arg-type]
    )
    parser.add_argument(
        "--tls-key",
        help="the private key of --tls-cert, PEM",
        **default,  # type: ignore[arg-type]
    )
    parser.add_argument(
        "--tls-ca",
        help="CA that signed the other side's certificates: turns TLS on for calls",
        **default,  # type: ignore[arg-type]
    )
    parser.add_argument(
        "--tls-server-name",
        help="expect this name in the server's certificate",
        **default,  # type: ignore[arg-type]
    )
    if server:
        parser.add_argument(
            "--tls-client-auth",
            action="store_true",
            help="mutual TLS: callers must show a certificate signed by --tls-ca",
        )


def _flag(args: argparse.Namespace, name: str) -> Path | None:
    value = getattr(args, name, None) or os.environ.get(f"METALEARN_{name.upper()}")
    return Path(value) if value else None


def server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The server side from the flags: TLS when a certificate and key are given."""
    cert, key, ca = _flag(args, "tls_cert"), _flag(args, "tls_key"), _flag(args, "tls_ca")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TlsError("give both --tls-cert and --tls-key")
    client_auth = getattr(args, "tls_client_auth", False) or bool(
        os.environ.get("METALEARN_TLS_CLIENT_AUTH")
    )
    if client_auth and ca is None:
        raise TlsError("--tls-client-auth needs --tls-ca")
    return ServerTls(cert, key, ca if client_auth else None)


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """The calling side from the flags: TLS when a CA is given (it also shows this
    process's certificate, when it has one, for mutual TLS)."""
    ca = _flag(args, "tls_ca")
    if ca is None:
        return None
    name = getattr(args, "tls_server_name", None) or os.environ.get("METALEARN_TLS_SERVER_NAME", "")
    return ClientTls(ca, _flag(args, "tls_cert"), _flag(args, "tls_key"), name)


# gRPC binds with SO_REUSEPORT by default: a second server on a port in use would start
# silently and share the port's calls with the first. Every server of ours turns it off.
NO_PORT_SHARING = ("grpc.so_reuseport", 0)


def listen_on(server: grpc.Server | grpc.aio.Server, listen: str, tls: ServerTls | None) -> int:
    """Binds `server` to HOST:PORT (TLS when `tls` is given); the port it got. A port in
    use is an OSError, never a shared port."""
    try:
        if tls is not None:
            port = server.add_secure_port(listen, tls.credentials())
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as err:  # grpc's way of saying the bind failed
        raise OSError(f"cannot listen on {listen}: is the port in use?") from err
    if port == 0:
        raise OSError(f"cannot listen on {listen}: is the port in use?")
    return port


def is_loopback(listen: str) -> bool:
    """Whether HOST:PORT binds only this machine (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Pki:
    """Files of a small certificate authority and one certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_pki(
    directory: Path,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    name: str = "metalearn",
    days: int = 825,
) -> Pki:
    """A CA and one certificate for `hosts`, good for serving and for mutual TLS
    (both server and client use), written as PEM files (keys mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: str, public: object, sign: object, ca: bool) -> object:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(sign, hashes.SHA256())  # type: ignore[arg-type]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build(f"{name} CA", f"{name} CA", ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, f"{name} CA", key.public_key(), ca_key, False)

    def pem(c: object) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]

    files = Pki(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    files.ca.write_bytes(pem(ca_cert))
    files.cert.write_bytes(pem(cert))
    files.key.touch(mode=0o600)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files

"""The gateway's OPC UA application certificate and the pinning of server certificates.

A server certificate is trusted only when it is pinned (its file, or its SHA-256 fingerprint)
or when `trust: any` is set: OPC UA's usual "trust on first use" is how an attacker on the
plant network gets in, so nothing is trusted silently.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua.config import OpcUaConnection

CERT_YEARS = 10  # an edge box runs for years; an expired certificate stops the plant's data


class CertificateError(Exception):
    """A certificate or key file is missing or unreadable."""


@dataclass(frozen=True)
class AppIdentity:
    """The gateway's application certificate (DER bytes), key file and application URI."""

    cert_der: bytes
    key_path: Path
    application_uri: str
    cert_path: Path


def application_uri(hostname: str | None = None) -> str:
    return f"urn:{hostname or socket.gethostname()}:shopfloor-gateway"


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, as colon-separated upper-case hex (as UaExpert shows it)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def load_der(path: str | Path) -> bytes:
    """A certificate file (PEM or DER) as DER bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate {path}: {exc.strerror}") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError as exc:
        raise CertificateError(f"{path} is not a PEM or DER certificate") from exc


def certificate_uri(der: bytes) -> str | None:
    """The application URI in a certificate's subjectAltName, if any."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def own_identity(conn: OpcUaConnection) -> AppIdentity:
    """The configured certificate, or the one generated into the PKI folder on first start."""
    if conn.certificate and conn.private_key:
        der = load_der(conn.certificate)
        key = Path(conn.private_key)
        if not key.is_file():
            raise CertificateError(f"private_key {key} does not exist")
        return AppIdentity(der, key, certificate_uri(der) or application_uri(),
                           Path(conn.certificate))
    return generated_identity(Path(conn.pki))


def generated_identity(pki: Path, hostname: str | None = None) -> AppIdentity:
    """Create pki/own/cert.der and pki/private/key.pem once; reuse them afterwards."""
    cert_path, key_path = pki / "own" / "cert.der", pki / "private" / "key.pem"
    uri = application_uri(hostname)
    if cert_path.is_file() and key_path.is_file():
        der = cert_path.read_bytes()
        return AppIdentity(der, key_path, certificate_uri(der) or uri, cert_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    der = write_self_signed(cert_path, key_path, uri, hostname or socket.gethostname(),
                            ExtendedKeyUsageOID.CLIENT_AUTH)
    return AppIdentity(der, key_path, uri, cert_path)


def write_self_signed(cert_path: Path, key_path: Path, uri: str, hostname: str,
                      usage: x509.ObjectIdentifier, years: int = CERT_YEARS) -> bytes:
    """A self-signed OPC UA application certificate (DER) and its key (PEM, mode 0600)."""
    key = cert_gen.generate_private_key()
    names = {"organizationName": "Shopfloor Gateway"}
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri),
                                         x509.DNSName(hostname)]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, uri, names, alt_names, extended=[usage], days=365 * years)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert_gen.dump_private_key_as_pem(key))
    der = cert.public_bytes(Encoding.DER)
    cert_path.write_bytes(der)
    return der


def pin_problem(server_der: bytes, conn: OpcUaConnection) -> str | None:
    """Why the server's certificate is not trusted, or None when it is pinned or trust is any."""
    got = fingerprint(server_der)
    if conn.server_certificate:
        if load_der(conn.server_certificate) == server_der:
            return None
        return (f"the server's certificate (SHA-256 {got}) is not the pinned one in "
                f"{conn.server_certificate}")
    if conn.server_fingerprint:
        if got.replace(":", "").lower() == conn.server_fingerprint:
            return None
        return (f"the server's certificate has SHA-256 {got}, not the pinned "
                f"server_fingerprint; if this is the right server, pin server_fingerprint: "
                f"\"{got}\"")
    if conn.trust == "any":
        return None
    return (f"the server's certificate (SHA-256 {got}) is not pinned: set server_fingerprint: "
            f"\"{got}\" or server_certificate, or trust: any")

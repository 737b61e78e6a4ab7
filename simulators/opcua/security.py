"""The simulator's security: a generated server certificate, secure endpoints, users.

Like a real PLC, it can refuse a client certificate it does not trust, a wrong password and
an unknown X.509 user, so the gateway's error messages can be tested against real refusals.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

SERVER_URI = "urn:shopfloor:simulator:cnc"

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


@dataclass
class SimulatorSecurity:
    """Secure endpoints for OpcUaSimulator.

    users: username -> password (an empty dict with no user_certificates allows anonymous).
    user_certificates: paths of X.509 user certificates accepted as identities.
    trusted_clients: when not None, only these client application certificates (paths) may
    open a session; None accepts any client certificate (auto-accept, as many PLCs ship).
    allow_none: also offer the unsecured endpoint.
    """

    pki: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="opcua-sim-pki-")))
    users: dict[str, str] = field(default_factory=dict)
    user_certificates: list[Path] = field(default_factory=list)
    trusted_clients: list[Path] | None = None
    allow_none: bool = False

    @property
    def certificate_path(self) -> Path:
        return self.pki / "server-cert.der"

    @property
    def key_path(self) -> Path:
        return self.pki / "server-key.pem"

    def fingerprint(self) -> str:
        return hashlib.sha256(self.certificate_path.read_bytes()).hexdigest()

    def ensure_certificate(self) -> None:
        """Generate the server certificate once (reused across restarts, as a PLC does)."""
        if self.certificate_path.is_file() and self.key_path.is_file():
            return
        self.pki.mkdir(parents=True, exist_ok=True)
        key = cert_gen.generate_private_key()
        host = socket.gethostname()
        cert = cert_gen.generate_self_signed_app_certificate(
            key, SERVER_URI, {"organizationName": "Shopfloor Simulator"},
            [x509.UniformResourceIdentifier(SERVER_URI), x509.DNSName(host),
             x509.DNSName("localhost")],
            extended=[ExtendedKeyUsageOID.SERVER_AUTH])
        self.key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
        self.certificate_path.write_bytes(cert.public_bytes(Encoding.DER))

    async def apply(self, server: Server) -> None:
        self.ensure_certificate()
        await server.load_certificate(str(self.certificate_path))
        await server.load_private_key(str(self.key_path))
        await server.set_application_uri(SERVER_URI)
        policies = list(SECURE_POLICIES)
        if self.allow_none:
            policies.insert(0, ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies)
        server.iserver.user_manager = _Users(self.users, _read_all(self.user_certificates))
        if self.trusted_clients is not None:
            trusted = set(_read_all(self.trusted_clients))
            server.set_certificate_validator(_TrustList(trusted))


class _TrustList:
    """Refuses every client application certificate not in the list (by DER bytes)."""

    def __init__(self, trusted: set[bytes]) -> None:
        self.trusted = trusted

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:

        if cert.public_bytes(Encoding.DER) not in self.trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


class _Users(UserManager):
    def __init__(self, passwords: dict[str, str], certificates: list[bytes]) -> None:
        self.passwords = passwords
        self.certificates = [_der(c) for c in certificates]

    def get_user(self, iserver: InternalServer, username: str | None = None,
                 password: str | None = None, certificate: Any = None) -> User | None:
        if username is not None:
            ok = self.passwords.get(username) == password
            return User(role=UserRole.User, name=username) if ok else None
        if certificate is not None and self.certificates:
            der = certificate if isinstance(certificate, bytes) else _der(certificate)
            return User(role=UserRole.User, name="x509") if der in self.certificates else None
        if self.passwords or self.certificates:
            return None  # anonymous is refused once users are configured
        return User(role=UserRole.User)


def _read_all(paths: list[Path]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


def _der(cert: Any) -> bytes:
    if isinstance(cert, bytes):
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
        return cert
    return bytes(cert.public_bytes(Encoding.DER))

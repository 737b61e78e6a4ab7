"""Pure parts of OPC UA security: fingerprints, pinning decisions, certificate files, config."""

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from drivers.opcua import pki
from drivers.opcua.config import OpcUaConnection
from drivers.opcua.session import _first_certificate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def server_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("srv")
    return pki.write_self_signed(d / "c.der", d / "k.pem", "urn:srv", "localhost",
                                 ExtendedKeyUsageOID.SERVER_AUTH)


def conn(**kw: object) -> OpcUaConnection:
    return OpcUaConnection.model_validate({"endpoint": "opc.tcp://127.0.0.1:4840", **kw})


def test_fingerprint_is_colon_hex_of_sha256() -> None:
    assert pki.fingerprint(b"abc") == (
        "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:"
        "00:15:AD")


def test_pinning_decisions(server_der: bytes, tmp_path: Path) -> None:
    digits = pki.fingerprint(server_der).replace(":", "")
    assert pki.pin_problem(server_der, conn(security="Basic256Sha256",
                                            server_fingerprint=digits)) is None
    assert pki.pin_problem(server_der, conn(trust="any")) is None
    assert "is not pinned" in str(pki.pin_problem(server_der, conn()))
    wrong = conn(security="Basic256Sha256", server_fingerprint="0" * 64)
    assert "not the pinned server_fingerprint" in str(pki.pin_problem(server_der, wrong))
    pem = tmp_path / "server.pem"
    pem.write_bytes(x509.load_der_x509_certificate(server_der).public_bytes(Encoding.PEM))
    assert pki.pin_problem(server_der, conn(security="Basic256Sha256",
                                            server_certificate=str(pem))) is None


def test_unreadable_certificate_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(pki.CertificateError, match=r"cannot read certificate .*missing\.der"):
        pki.load_der(tmp_path / "missing.der")
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(pki.CertificateError, match=r"junk\.der is not a PEM or DER"):
        pki.load_der(junk)


def test_generated_identity_is_a_client_certificate_with_our_uri(tmp_path: Path) -> None:
    identity = pki.generated_identity(tmp_path, hostname="edge-box")
    cert = x509.load_der_x509_certificate(identity.cert_der)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert identity.application_uri == "urn:edge-box:shopfloor-gateway"
    assert pki.certificate_uri(identity.cert_der) == identity.application_uri
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert years >= 9.9
    assert pki.generated_identity(tmp_path, hostname="edge-box").cert_der == identity.cert_der


def test_first_certificate_of_a_chain(server_der: bytes, tmp_path: Path) -> None:
    other = pki.write_self_signed(tmp_path / "o.der", tmp_path / "o.pem", "urn:o", "h",
                                  ExtendedKeyUsageOID.SERVER_AUTH)
    assert _first_certificate(server_der + other) == server_der
    assert _first_certificate(server_der) == server_der
    assert _first_certificate(None) is None


@pytest.mark.parametrize(("options", "message"), [
    ({"security": "Basic128Rsa15"}, "Basic128Rsa15 is deprecated"),
    ({"security": "Basic256"}, "Basic256 is deprecated"),
    ({"security": "Basic512"}, "unknown security policy"),
    ({"security": "Basic256Sha256"}, "needs the server's certificate pinned"),
    ({"server_fingerprint": "12:34"}, "64 hex digits"),
    ({"certificate": __file__}, "certificate and private_key go together"),
    ({"user_certificate": __file__}, "user_certificate and user_private_key go together"),
    ({"user_certificate": __file__, "user_private_key": __file__, "username": "x"},
     "choose one user identity"),
])
def test_connection_config_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        conn(**options)


def test_certificate_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"server_certificate\n.*file not found: .*nope\.der"):
        conn(security="Basic256Sha256", server_certificate=str(tmp_path / "nope.der"))


def test_a_fingerprint_is_normalised() -> None:
    value = conn(security="Basic256Sha256", server_fingerprint="AB:" * 31 + "AB")
    assert value.server_fingerprint == "ab" * 32

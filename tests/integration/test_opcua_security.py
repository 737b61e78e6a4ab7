"""OPC UA security against the simulator's real secure endpoints: every policy and mode, the
three user identities, pinning, and a clear message for each kind of refusal."""

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua import pki
from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.session import SecurityRejected
from gateway.errors import DeviceUnreachable
from gateway.models import Quality, Reading
from simulators.opcua import OpcUaSimulator
from simulators.opcua.security import SimulatorSecurity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
async def secure_sim(tmp_path: Path) -> AsyncIterator[OpcUaSimulator]:
    security = SimulatorSecurity(pki=tmp_path / "server-pki", users={"operator": "s3cret"})
    async with OpcUaSimulator(seed=1, tick=0.05, security=security) as sim:
        yield sim


def _security(sim: OpcUaSimulator) -> SimulatorSecurity:
    assert sim.security is not None
    return sim.security


def make(sim: OpcUaSimulator, tmp_path: Path, read_mode: str = "poll", **conn: Any) -> OpcUaDriver:
    connection = {"endpoint": sim.endpoint, "timeout": "3s", "pki": str(tmp_path / "pki"),
                  **conn}
    cfg = OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": read_mode, "poll_interval": "100ms",
        "connection": connection,
        "tags": [{"name": "speed", "node": "ns=2;s=Cnc.SpindleSpeed", "unit": "rpm"},
                 {"name": "parts", "node": "ns=2;s=Cnc.PartCounter"}]})
    return OpcUaDriver(cfg)


async def good_readings(driver: OpcUaDriver, seconds: float = 0.6) -> list[Reading]:
    await driver.connect()
    out: list[Reading] = []
    try:
        for _ in range(int(seconds / 0.1)):
            out += await driver.read()
            await asyncio.sleep(0.1)
    finally:
        await driver.close()
    return [r for r in out if r.quality is Quality.GOOD]


async def refusal(driver: OpcUaDriver) -> str:
    with pytest.raises(SecurityRejected) as info:
        await driver.connect()
    await driver.close()
    return str(info.value)


@pytest.mark.parametrize("policy", ["Basic256Sha256", "Aes128_Sha256_RsaOaep",
                                    "Aes256_Sha256_RsaPss"])
@pytest.mark.parametrize("message_mode", ["Sign", "SignAndEncrypt"])
async def test_every_policy_and_mode_with_a_password_and_a_pinned_certificate(
        secure_sim: OpcUaSimulator, tmp_path: Path, policy: str, message_mode: str) -> None:
    driver = make(secure_sim, tmp_path, "subscribe", security=policy, mode=message_mode,
                  server_certificate=str(_security(secure_sim).certificate_path),
                  username="operator", password="s3cret")
    got = await good_readings(driver)
    assert {r.tag for r in got} == {"speed", "parts"}
    assert all(r.value is not None for r in got)


async def test_pinned_by_fingerprint_with_colons(secure_sim: OpcUaSimulator,
                                                 tmp_path: Path) -> None:
    digits = _security(secure_sim).fingerprint().upper()
    colons = ":".join(digits[i:i + 2] for i in range(0, 64, 2))
    driver = make(secure_sim, tmp_path, security="Basic256Sha256", server_fingerprint=colons,
                  username="operator", password="s3cret")
    assert await good_readings(driver, 0.2)


async def test_wrong_password_says_the_server_rejected_the_login(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    driver = make(secure_sim, tmp_path, security="Basic256Sha256",
                  server_certificate=str(_security(secure_sim).certificate_path),
                  username="operator", password="wrong")
    message = await refusal(driver)
    assert "rejected the login of user 'operator'" in message
    assert "BadUserAccessDenied" in message and "wrong" not in message.replace(
        "wrong user or password", "")


async def test_anonymous_is_refused_when_the_server_wants_users(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    driver = make(secure_sim, tmp_path, security="Basic256Sha256",
                  server_certificate=str(_security(secure_sim).certificate_path))
    assert "rejected anonymous access" in await refusal(driver)


async def test_an_unpinned_server_certificate_is_refused_by_the_gateway(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    pki.write_self_signed(other / "cert.der", other / "key.pem", "urn:other", "localhost",
                          ExtendedKeyUsageOID.SERVER_AUTH)
    driver = make(secure_sim, tmp_path, security="Basic256Sha256",
                  server_certificate=str(other / "cert.der"),
                  username="operator", password="s3cret")
    message = await refusal(driver)
    real = pki.fingerprint(_security(secure_sim).certificate_path.read_bytes())
    assert message.startswith("gateway rejected the server")
    assert f"(SHA-256 {real}) is not the pinned one in {other / 'cert.der'}" in message


async def test_a_wrong_fingerprint_tells_the_one_to_pin(secure_sim: OpcUaSimulator,
                                                        tmp_path: Path) -> None:
    driver = make(secure_sim, tmp_path, security="Basic256Sha256",
                  server_fingerprint="ab" * 32, username="operator", password="s3cret")
    real = pki.fingerprint(_security(secure_sim).certificate_path.read_bytes())
    assert f'pin server_fingerprint: "{real}"' in await refusal(driver)


async def test_trust_any_connects_and_warns(secure_sim: OpcUaSimulator, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    driver = make(secure_sim, tmp_path, security="Basic256Sha256", trust="any",
                  username="operator", password="s3cret")
    with caplog.at_level(logging.WARNING, logger="drivers.opcua.session"):
        assert await good_readings(driver, 0.2)
    real = pki.fingerprint(_security(secure_sim).certificate_path.read_bytes())
    assert any("trust: any" in r.getMessage() and real in r.getMessage()
               for r in caplog.records)


async def test_security_none_against_a_secure_only_server_lists_what_it_offers(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    message = await refusal(make(secure_sim, tmp_path, username="operator", password="s3cret"))
    assert "offers no endpoint with security None" in message
    assert "Basic256Sha256/SignAndEncrypt" in message


async def test_the_gateway_certificate_is_generated_once_and_kept(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    options = {"security": "Basic256Sha256", "username": "operator", "password": "s3cret",
               "server_certificate": str(_security(secure_sim).certificate_path)}
    assert await good_readings(make(secure_sim, tmp_path, **options), 0.2)
    cert, key = tmp_path / "pki" / "own" / "cert.der", tmp_path / "pki" / "private" / "key.pem"
    first = cert.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pki.certificate_uri(first) == pki.application_uri()
    assert await good_readings(make(secure_sim, tmp_path, **options), 0.2)
    assert cert.read_bytes() == first


async def test_a_server_that_does_not_trust_the_gateway_names_the_certificate(
        tmp_path: Path) -> None:
    security = SimulatorSecurity(pki=tmp_path / "server-pki", trusted_clients=[])
    async with OpcUaSimulator(security=security) as sim:
        driver = make(sim, tmp_path, security="Basic256Sha256", trust="any")
        message = await refusal(driver)
        own = tmp_path / "pki" / "own" / "cert.der"
        assert "rejected the gateway's application certificate" in message
        assert str(own) in message and "BadCertificateUntrusted" in message
        # The operator's fix: trust that file on the server; then it connects.
        security.trusted_clients = [own]
        await sim.restart()
        assert await good_readings(make(sim, tmp_path, security="Basic256Sha256",
                                        trust="any"), 0.2)


async def test_x509_user_identity(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.mkdir()
    for name in ("alice", "mallory"):
        pki.write_self_signed(users / f"{name}.der", users / f"{name}.pem", f"urn:{name}",
                              "localhost", ExtendedKeyUsageOID.CLIENT_AUTH)
    security = SimulatorSecurity(pki=tmp_path / "server-pki",
                                 user_certificates=[users / "alice.der"])
    async with OpcUaSimulator(security=security) as sim:
        def as_user(name: str) -> OpcUaDriver:
            return make(sim, tmp_path, security="Basic256Sha256", trust="any",
                        user_certificate=str(users / f"{name}.der"),
                        user_private_key=str(users / f"{name}.pem"))
        assert await good_readings(as_user("alice"), 0.2)
        message = await refusal(as_user("mallory"))
        assert f"rejected the X.509 user certificate {users / 'mallory.der'}" in message


async def test_secure_session_comes_back_after_a_server_restart(
        secure_sim: OpcUaSimulator, tmp_path: Path) -> None:
    driver = make(secure_sim, tmp_path, "subscribe", security="Basic256Sha256",
                  server_certificate=str(_security(secure_sim).certificate_path),
                  username="operator", password="s3cret")
    await driver.connect()
    try:
        await secure_sim.restart()
        with pytest.raises(DeviceUnreachable):
            for _ in range(50):
                await driver.read()
                await asyncio.sleep(0.1)
        await driver.close()
        assert await good_readings(driver, 0.5)
    finally:
        await driver.close()

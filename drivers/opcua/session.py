"""Opening an OPC UA session from an OpcUaConnection: shared by the driver and `discover`.

Security is set up in three visible steps so each failure can say which side refused what:
1. list the server's endpoints over an unsecured channel and pick the configured policy/mode;
2. check the server certificate found there against the pin (never trusted silently);
3. open the secure channel and session with the gateway's certificate and the user identity.
"""

from __future__ import annotations

import asyncio
import logging

from asyncua import Client, ua
from asyncua.crypto import security_policies

from drivers.opcua import pki, quiet
from drivers.opcua.config import OpcUaConnection
from drivers.opcua.reasons import reason
from gateway.errors import DeviceUnreachable

log = logging.getLogger(__name__)

POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
NONE_URI = security_policies.SecurityPolicyNone.URI
quiet.install()  # every client of the gateway is opened here


class SecurityRejected(DeviceUnreachable):
    """A certificate, policy or login was refused; the message says by which side and why."""


async def open_client(conn: OpcUaConnection, device: str) -> Client:
    """A connected client, or DeviceUnreachable with a message that says who refused what."""
    client = Client(conn.endpoint, timeout=conn.timeout)
    client.session_timeout = 30_000
    own: pki.AppIdentity | None = None
    try:
        if conn.security != "None":
            own = await _secure(client, conn, device)
        else:
            await _require_endpoint(conn, device)
        await _set_identity(client, conn, device)
        await asyncio.wait_for(client.connect(), conn.timeout)
    except ua.UaStatusCodeError as exc:
        raise SecurityRejected(_refusal(conn, own, ua.StatusCode(exc.code).name), device) from exc
    except ua.UaError as exc:  # asyncua's own checks, e.g. a certificate switched mid-connect
        raise SecurityRejected(f"{conn.endpoint}: {reason(exc)}", device) from exc
    except (OSError, TimeoutError, EOFError) as exc:
        _drop_socket(client)  # a timed-out connect leaves its socket and tasks behind
        hint = _closed_hint(conn) if conn.security != "None" else ""
        raise DeviceUnreachable(f"{conn.endpoint}: {reason(exc, conn.timeout)}{hint}",
                                device) from exc
    return client


async def _secure(client: Client, conn: OpcUaConnection, device: str) -> pki.AppIdentity:
    try:
        own = await asyncio.to_thread(pki.own_identity, conn)
    except pki.CertificateError as exc:
        raise SecurityRejected(f"gateway certificate: {reason(exc)}", device) from exc
    endpoint = await _require_endpoint(conn, device)
    server_der = _first_certificate(endpoint.ServerCertificate)
    if not server_der:
        raise SecurityRejected(f"{conn.endpoint}: the server sent no certificate with its "
                               f"{conn.security} endpoint", device)
    try:
        problem = pki.pin_problem(server_der, conn)
    except pki.CertificateError as exc:
        raise SecurityRejected(f"server_certificate: {reason(exc)}", device) from exc
    if problem:
        raise SecurityRejected(f"gateway rejected the server at {conn.endpoint}: {problem}",
                               device)
    if conn.trust == "any" and not (conn.server_certificate or conn.server_fingerprint):
        log.warning("%s: trusting the server certificate SHA-256 %s without a pin (trust: any); "
                    "anyone on the network can impersonate this server", device,
                    pki.fingerprint(server_der))
    log.info("%s: %s/%s with the gateway certificate %s (SHA-256 %s)", device, conn.security,
             conn.mode, own.cert_path, pki.fingerprint(own.cert_der))
    client.application_uri = own.application_uri
    await client.set_security(POLICY_CLASSES[conn.security], own.cert_der,
                              str(own.key_path), server_certificate=server_der,
                              mode=getattr(ua.MessageSecurityMode, conn.mode))
    return own


async def _require_endpoint(conn: OpcUaConnection, device: str) -> ua.EndpointDescription:
    """The server's endpoint for the configured policy and mode, or a clear refusal."""
    probe = Client(conn.endpoint, timeout=conn.timeout)
    endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), conn.timeout)
    uri = POLICY_CLASSES[conn.security].URI if conn.security != "None" else NONE_URI
    mode = ua.MessageSecurityMode.None_ if conn.security == "None" else getattr(
        ua.MessageSecurityMode, conn.mode)
    for ep in endpoints:
        if ep.SecurityPolicyUri == uri and ep.SecurityMode == mode:
            return ep
    offered = sorted({f"{_policy_name(ep.SecurityPolicyUri)}/{ep.SecurityMode.name}"
                      for ep in endpoints})
    wanted = "None" if conn.security == "None" else f"{conn.security}/{conn.mode}"
    raise SecurityRejected(f"{conn.endpoint} offers no endpoint with security {wanted}; "
                           f"it offers {', '.join(offered) or 'none'}", device)


async def _set_identity(client: Client, conn: OpcUaConnection, device: str) -> None:
    if conn.username:
        client.set_user(conn.username)
        client.set_password(conn.password.get_secret_value())
    elif conn.user_certificate and conn.user_private_key:
        try:
            await client.load_client_certificate(conn.user_certificate)
            await client.load_private_key(conn.user_private_key)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise SecurityRejected(f"user_certificate: cannot load {conn.user_certificate} or "
                                   f"its key: {reason(exc)}", device) from exc


def _refusal(conn: OpcUaConnection, own: pki.AppIdentity | None, status: str) -> str:
    """Turn a status code from the server into who refused what."""
    if "UserAccessDenied" in status or "IdentityToken" in status:
        if conn.user_certificate:
            who = f"the X.509 user certificate {conn.user_certificate}"
        elif conn.username:
            who = f"the login of user {conn.username!r} (wrong user or password?)"
        else:
            who = "anonymous access"
        return f"server at {conn.endpoint} rejected {who} ({status})"
    if "Certificate" in status or "Security" in status:
        mine = (f" {own.cert_path} (SHA-256 {pki.fingerprint(own.cert_der)}): add it to the "
                "server's trusted certificates" if own else "")
        return (f"server at {conn.endpoint} rejected the gateway's application "
                f"certificate{mine} ({status})")
    return f"server at {conn.endpoint} refused the session ({status})"


def _drop_socket(client: Client) -> None:
    try:
        client.disconnect_socket()
    except Exception:  # nothing to close, or closed already
        log.debug("closing the socket of a failed connect failed", exc_info=True)


def _closed_hint(conn: OpcUaConnection) -> str:
    return (f" (the server closed the connection while a {conn.security}/{conn.mode} channel "
            "was being opened: it may not trust the gateway's certificate)")


def _first_certificate(chain: bytes | None) -> bytes | None:
    """The leaf of a DER chain: servers may send their whole chain concatenated."""
    if not chain:
        return None
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    length = chain[1]
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(chain[2:2 + count], "big")
        return chain[:2 + count + length]
    return chain[:2 + length]


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1]

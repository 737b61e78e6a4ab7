"""Opening an OPC UA session from an OpcUaConnection: shared by the driver and `discover`."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua

from drivers.opcua.config import OpcUaConnection
from gateway.errors import DeviceUnreachable


async def open_client(conn: OpcUaConnection, device: str) -> Client:
    """A connected client, or DeviceUnreachable with a message that says who refused what."""
    client = Client(conn.endpoint, timeout=conn.timeout)
    client.session_timeout = 30_000
    if conn.username:
        client.set_user(conn.username)
        client.set_password(conn.password.get_secret_value())
    try:
        await asyncio.wait_for(client.connect(), conn.timeout)
    except ua.UaStatusCodeError as exc:
        raise DeviceUnreachable(_login_message(conn.username, exc), device) from exc
    except (OSError, TimeoutError) as exc:
        raise DeviceUnreachable(f"{conn.endpoint}: {exc or 'timed out'}", device) from exc
    return client


def _login_message(username: str, exc: ua.UaStatusCodeError) -> str:
    name = ua.StatusCode(exc.code).name
    if "UserAccessDenied" in name or "IdentityToken" in name:
        return f"server rejected the login for user {username!r} ({name})"
    if "Security" in name or "Certificate" in name:
        return f"server rejected our certificate or security settings ({name})"
    return f"server refused the session ({name})"

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.config import config_secrets, parse_config
from gateway.logs import JsonFormatter, RedactingFilter, redact

pytestmark = pytest.mark.unit


def capture(secrets: list[str], json_lines: bool = False) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(secrets))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test-{len(secrets)}-{json_lines}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_secrets_never_reach_the_log() -> None:
    logger, stream = capture(["hunter2"])
    logger.warning("login as %s with %s failed", "op", "hunter2")
    try:
        raise RuntimeError("bad password hunter2")
    except RuntimeError:
        logger.exception("connect failed")
    assert "hunter2" not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_url_credentials_are_redacted() -> None:
    assert redact("mqtt://op:pa55@broker:1883", []) == "mqtt://op:***@broker:1883"


def test_json_format_is_one_object_per_line() -> None:
    logger, stream = capture(["s3cret"], json_lines=True)
    logger.info("token s3cret rejected")
    entry = json.loads(stream.getvalue().strip())
    assert entry["level"] == "info" and entry["message"] == "token *** rejected"
    assert entry["ts"].endswith("Z")


def test_config_secrets_are_collected_for_redaction() -> None:
    config = parse_config("""
gateway: {id: g}
sinks:
  mqtt: {url: "mqtt://127.0.0.1:1883", username: op, password: p4ss}
  influxdb: {url: "http://127.0.0.1:8086", token: t0ken}
""", env={})
    assert sorted(config_secrets(config)) == ["p4ss", "t0ken"]

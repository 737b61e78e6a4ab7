"""`gateway status` beside a running demo and after it: finds the demo's buffer, shows the
devices and explains its columns."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import wait_for

pytestmark = pytest.mark.integration


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "status", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_status_finds_the_demo_shows_its_devices_and_explains_columns(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DEMO_HOME": str(tmp_path / "demo")}
    demo = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--duration", "120",
                             "--mqtt-port", "0", "--http-port", "0", "--no-live"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        seen: list[str] = []

        def running() -> bool:
            seen[:] = [status(env).stdout]
            # the demo's devices connect after its status page is up: wait for an answer
            return (": running" in seen[0] and "cnc-01" in seen[0]
                    and re.search(r"press-01\s+answering\s+\d+", seen[0]) is not None)

        wait_for(running, 60, "the running demo in `gateway status`")
        text = seen[0]
        assert str(tmp_path / "demo" / "buffer.db") in text
        assert re.search(r"mqtt\s+\d+\s+[\d.]+s\s+\d+\s+\d+\s+yes", text), text
        for column in ("backlog", "oldest unsent", "dropped", "unconfirmed"):
            assert re.search(rf"^  {column}\s+\S", text, re.M), column  # each one explained
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0
    after = status(env)
    assert after.returncode == 0, after.stderr
    assert "not answering" in after.stdout and "press-01" in after.stdout


def test_a_config_without_a_buffer_points_at_the_demos(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DEMO_HOME": str(tmp_path / "demo")}
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text(
        '{"buffer": "/x/buffer.db", "http": "127.0.0.1:1", "log": "/x/log"}')
    config = tmp_path / "gateway.yaml"
    config.write_text(f"gateway: {{id: gw, buffer: {{path: {tmp_path / 'none.db'}}}}}\n"
                      "sinks: {mqtt: {url: 'mqtt://127.0.0.1:1883'}}\ndevices: []\n")
    result = status(env, "--config", str(config))
    assert result.returncode == 1
    assert f"no buffer at {tmp_path / 'none.db'} yet" in result.stderr
    assert "the demo's buffer is /x/buffer.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_config_and_no_demo_says_what_to_give(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DEMO_HOME": str(tmp_path / "nothing")}
    result = status(env)
    assert result.returncode == 2
    assert "gateway status needs --config FILE" in result.stderr

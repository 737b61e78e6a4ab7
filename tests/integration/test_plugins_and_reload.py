"""A third-party driver package (examples/gateway-hoststats) through `check` and `run`, a broken
plugin's error, and reloading a running gateway's devices (SIGHUP / `gateway reload`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import free_port, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def gateway_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def config_text(tmp_path: Path, http_port: int, devices: list[str]) -> str:
    blocks = "".join(textwrap.dedent(f"""\
          - name: {name}
            driver: hoststats
            poll_interval: 200ms
            tags:
              - {{name: load, metric: load1}}
              - {{name: uptime, metric: uptime_s}}
        """) for name in devices)
    return textwrap.dedent(f"""\
        gateway:
          id: plugin-test
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{listen: "127.0.0.1:{http_port}"}}
        sinks:
          mqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}
        devices:
        """) + textwrap.indent(blocks, "  ")


def api_tags(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tags", timeout=5) as answer:
        return list(json.loads(answer.read()))


def devices_seen(port: int) -> set[str]:
    try:
        return {tag["device"] for tag in api_tags(port) if tag["quality"] == "good"}
    except OSError:
        return set()


@pytest.fixture
def running_gateway(tmp_path: Path, hoststats_plugin: None) -> Iterator[tuple[Path, int,
                                                                              subprocess.Popen[bytes]]]:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(tmp_path, port, ["box-a"]))
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: devices_seen(port) == {"box-a"}, 60, "box-a's values")
        yield config, port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_plugin_driver_passes_check(tmp_path: Path, hoststats_plugin: None) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(tmp_path, free_port(), ["box-a", "box-b"]))
    result = gateway_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "2 device(s), 4 tag(s)" in result.stdout


def test_plugin_config_errors_name_key_and_line(tmp_path: Path, hoststats_plugin: None) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(tmp_path, free_port(), ["box-a"]).replace("load1", "load99"))
    result = gateway_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert "devices[0].tags[0].metric" in result.stderr and "line 12" in result.stderr


def test_plugin_that_fails_to_import_is_named(tmp_path: Path) -> None:
    dist = tmp_path / "site" / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gateway.drivers]\ns7 = no_such_module:S7Driver\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(tmp_path, free_port(), ["plc"]).replace("hoststats", "s7"))
    result = gateway_cli("check", "--config", str(config),
                         env={"PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}"})
    assert result.returncode == 2
    assert "driver plugin 's7' (no_such_module:S7Driver) failed to import" in result.stderr


def test_plugin_driver_runs_and_publishes(running_gateway: tuple[Path, int, Any]) -> None:
    _, port, _ = running_gateway
    tags = {tag["tag"]: tag for tag in api_tags(port)}
    assert tags["uptime"]["unit"] == "s" and tags["uptime"]["value"] > 0
    assert isinstance(tags["load"]["value"], float)


def test_sighup_applies_added_and_removed_devices(running_gateway: tuple[Path, int, Any],
                                                 tmp_path: Path) -> None:
    config, port, proc = running_gateway
    config.write_text(config_text(tmp_path, port, ["box-b", "box-c"]))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: devices_seen(port) == {"box-b", "box-c"}, 20, "the reloaded devices")
    assert proc.poll() is None, "reload must not restart the process"


def test_reload_command_refuses_an_invalid_config(running_gateway: tuple[Path, int, Any],
                                                  tmp_path: Path) -> None:
    config, port, _proc = running_gateway
    good = config.read_text()
    config.write_text(good.replace("metric: load1", "metric: nonsense"))
    result = gateway_cli("reload", "--config", str(config))
    assert result.returncode == 2, "checked before the gateway is even asked"
    assert "devices[0].tags[0].metric" in result.stderr
    # The gateway itself refuses it too (as on SIGHUP), naming the errors.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "devices[0].tags[0].metric" in json.loads(refused.value.read())["errors"][0]
    time.sleep(0.5)
    assert devices_seen(port) == {"box-a"}, "the old config keeps running"
    config.write_text(config_text(tmp_path, port, ["box-a", "box-z"]))
    result = gateway_cli("reload", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["changes"]["added"] == ["box-z"]
    wait_for(lambda: devices_seen(port) == {"box-a", "box-z"}, 20, "box-z's values")


def test_reload_of_another_file_is_refused_naming_the_running_one(
        running_gateway: tuple[Path, int, Any], tmp_path: Path) -> None:
    config, port, _proc = running_gateway
    other = tmp_path / "other.yaml"
    other.write_text(config_text(tmp_path, port, ["box-a", "box-o"]))
    result = gateway_cli("reload", "--config", str(other))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"this gateway runs {config.resolve()}" in result.stderr
    assert f"gateway run --config {other.resolve()}" in result.stderr
    assert devices_seen(port) == {"box-a"}, "nothing was reloaded"
    # The same file under another spelling (relative, from its folder) is the same file.
    config.write_text(config_text(tmp_path, port, ["box-a", "box-r"]))
    same = subprocess.run([sys.executable, "-m", "gateway", "reload", "--config", "gateway.yaml"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["changes"]["added"] == ["box-r"]


def test_reload_with_no_gateway_running_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    port = free_port()
    config.write_text(config_text(tmp_path, port, ["box-a"]))
    result = gateway_cli("reload", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"no gateway answers at http://127.0.0.1:{port}/ ([Errno 111] Connection refused): "
        f"is `gateway run --config {config}` running?"], result.stderr


def test_reload_against_another_program_on_the_port_is_one_line(tmp_path: Path) -> None:
    """A web server that is not a gateway (an HTML 404) gets no traceback."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "gateway.yaml"
        config.write_text(config_text(tmp_path, server.server_address[1], ["box-a"]))
        result = gateway_cli("reload", "--config", str(config))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"http://127.0.0.1:{server.server_address[1]}/ answered, but not as a gateway: another "
        "program has that port (gateway.http.listen)"], result.stderr

"""`gateway check` and `gateway run` as a user runs them: what `run` would die of, `check`
reports first, each problem in one line with key path and line, never a traceback."""

from __future__ import annotations

import codecs
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
EXIT_CONFIG = 2


def base(tmp_path: Path, mqtt: str = "mqtt://127.0.0.1:1883", http: str = "127.0.0.1:0",
         buffer: str | None = None) -> str:
    return (f"gateway:\n  id: edge-01\n  buffer:\n    path: {buffer or tmp_path / 'b.db'}\n"
            f"  http:\n    listen: '{http}'\nsinks:\n  mqtt:\n    url: {mqtt}\n")


def gateway(tmp_path: Path, command: str, text: str | bytes, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return subprocess.run(
        [sys.executable, "-m", "gateway", command, "--config", str(path)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True,
        text=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line of a refused start, checked for the words and for no traceback."""
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().split("\n")
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_valid_file_checks_ok_in_one_line(tmp_path: Path) -> None:
    result = gateway(tmp_path, "check", base(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK: gateway edge-01, 0 device(s), 0 tag(s), "
                                          "sinks: mqtt")


@pytest.mark.parametrize(("change", "words"), [
    (lambda t, p: t + "devices:\n  - name: press\n    poll_interval: 1s\n",
     ["line 11: devices[0].driver: required key is missing"]),
    (lambda t, p: t.replace("'127.0.0.1:0'", "localhost"),
     ["line 6: gateway.http.listen: must be host:port"]),
    (lambda t, p: t.replace(":1883", ":99999"), ["line 9: sinks.mqtt.url:", "1-65535"]),
    (lambda t, p: t.replace(str(p / "b.db"), str(p)),
     ["line 4: gateway.buffer.path:", "is a directory"]),
    (lambda t, p: t.replace("mqtt://127.0.0.1:1883",
                            f"mqtts://127.0.0.1:8883\n    ca: {p / 'ca.pem'}"),
     ["line 10: sinks.mqtt.ca: CA file", "not found"]),
    (lambda t, p: t + "devices:\n  - {name: a, driver: modbus, poll_interval: 0.001ms, "
     "connection: {host: h}, tags: [{name: t, table: coil, address: 0, type: bool}]}\n",
     ["line 11: devices[0].poll_interval: must be at least 10ms"]),
    (lambda t, p: t.replace("buffer:\n", "buffer:\n    max_size: 1.5\n"),
     ["line 4: gateway.buffer.max_size:", "needs a unit"]),
    (lambda t, p: t + "devices:\n  - {name: a, driver: modbus, connection: {host: h}, "
     "tags: [{name: t, table: holding, address: 0, scale: .nan}]}\n",
     ["line 11: devices[0].tags[0].scale:", "finite"]),
    (lambda t, p: t.replace("  id: edge-01\n", "  id: edge-01\n  ? [a, b]\n  : 1\n"),
     ["line 3: gateway: a key must be a plain name, not a list"]),
    (lambda t, p: t.replace("    url:", "    kepalive: 5s\n    url:"),
     ["line 9: sinks.mqtt.kepalive: unknown key (did you mean 'keepalive'?)"]),
])
def test_check_refuses_in_one_line_what_run_would_die_of(tmp_path: Path, change: object,
                                                         words: list[str]) -> None:
    text = change(base(tmp_path), tmp_path)  # type: ignore[operator]
    refused(gateway(tmp_path, "check", text), *words)


def test_check_never_prints_a_password_pasted_into_the_wrong_key(tmp_path: Path) -> None:
    text = base(tmp_path).replace("    url:", "    keepalive: Tr0ub4dor&3\n    url:")
    line = refused(gateway(tmp_path, "check", text), "sinks.mqtt.keepalive")
    assert "Tr0ub4dor" not in line


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(os.urandom(300))
    text = base(tmp_path).replace("mqtt://127.0.0.1:1883",
                                  f"mqtts://127.0.0.1:8883\n    ca: {tmp_path / 'ca.pem'}")
    refused(gateway(tmp_path, "check", text), "sinks.mqtt.ca:", "not a PEM CA certificate")


@pytest.mark.parametrize(("data", "words"), [
    (lambda t: t.replace("edge-01", "caf\xe9").encode("latin-1"),
     ["line 2, column 10: the file is not UTF-8"]),
    (lambda t: t.replace("edge-01", "a\x00b").encode(), ["line 2, column 8: a NUL byte"]),
    (lambda t: t.encode("utf-16-le"), ["a NUL byte", "UTF-16 without a byte order mark"]),
    (lambda t: os.urandom(2000), []),
])
def test_check_never_tracebacks_on_bytes_that_are_not_utf8_yaml(tmp_path: Path, data: object,
                                                                 words: list[str]) -> None:
    payload = data(base(tmp_path))  # type: ignore[operator]
    result = gateway(tmp_path, "check", payload)
    assert result.returncode == EXIT_CONFIG and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_utf16_with_a_byte_order_mark_is_checked(tmp_path: Path) -> None:
    payload = codecs.BOM_UTF16_LE + base(tmp_path).encode("utf-16-le")
    assert gateway(tmp_path, "check", payload).returncode == 0


def test_a_yaml_syntax_error_says_what_with_line_and_caret(tmp_path: Path) -> None:
    text = base(tmp_path).replace("  id: edge-01\n", "  id: edge-01\n\tsite: x\n")
    result = gateway(tmp_path, "check", text)
    assert result.returncode == EXIT_CONFIG and "Traceback" not in result.stderr
    first, shown, caret = result.stderr.rstrip("\n").split("\n")
    assert first.endswith("line 3, column 1: YAML syntax: a tab character: YAML indents with "
                          "spaces only (replace the tab by spaces)")
    assert shown.strip() == "site: x" and caret.strip() == "^"


def test_a_27_line_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, 27)]
    started = time.monotonic()
    result = gateway(tmp_path, "check", "\n".join(lines) + "\n", timeout=30)
    assert time.monotonic() - started < 20  # the import of the gateway is most of it
    refused(result, "aliases (*name) expand to more than 250,000 values")


def test_a_variable_inside_a_flow_mapping_works(tmp_path: Path) -> None:
    text = base(tmp_path).replace("    url: mqtt://127.0.0.1:1883",
                                  "    {url: 'mqtt://127.0.0.1:1883', password: ${P}}")
    text = text.replace("  mqtt:\n    {", "  mqtt: {")
    result = gateway(tmp_path, "check", text, env={"P": "s3cret, {x}: y"})
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(300)
def test_a_200000_tag_file_checks_in_reasonable_time(tmp_path: Path) -> None:
    out = [base(tmp_path), "devices:"]
    for device in range(20):
        out += [f"  - name: plc-{device}", "    driver: modbus", "    connection:",
                "      host: 127.0.0.1", "      port: 5020", "    tags:"]
        for tag in range(10_000):
            out += [f"      - name: t{tag}", "        table: holding",
                    f"        address: {tag}", "        type: uint16"]
    started = time.monotonic()
    result = gateway(tmp_path, "check", "\n".join(out) + "\n", timeout=280)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "20 device(s), 200000 tag(s)" in result.stdout
    # ~10 s on an idle 2-core box, 27 s beside 8 busy jobs; it took over 300 s before.
    assert elapsed < 120, f"check took {elapsed:.0f}s"


# --- run: refused before anything connects ---------------------------------------------------


def test_run_with_the_status_port_taken_says_so_before_connecting_anything(
        tmp_path: Path) -> None:
    with socket.socket() as taken, socket.socket() as broker:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        broker.bind(("127.0.0.1", 0))  # stands in for the broker: counts connection attempts
        broker.listen()
        broker_port = broker.getsockname()[1]
        text = base(tmp_path, mqtt=f"mqtt://127.0.0.1:{broker_port}",
                    http=f"127.0.0.1:{http_port}")
        result = gateway(tmp_path, "run", text)
        refused(result, f"line 6: gateway.http.listen: port {http_port} is already in use",
                "set gateway.http.listen to another port")
        broker.setblocking(False)
        with pytest.raises(BlockingIOError):
            broker.accept()  # nothing ever connected to the broker
    assert not (tmp_path / "b.db").exists()


def test_check_only_warns_about_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway(tmp_path, "check", base(tmp_path, http=f"127.0.0.1:{port}"))
    assert result.returncode == 0
    assert f"warning: line 6: gateway.http.listen: port {port} is already in use" in \
        result.stderr


def test_run_with_a_buffer_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    text = base(tmp_path, buffer=str(tmp_path), mqtt=f"mqtt://127.0.0.1:{free_port()}")
    refused(gateway(tmp_path, "run", text), "gateway.buffer.path:", "is a directory")


def test_check_warns_about_a_modicon_address_with_key_path_and_line(tmp_path: Path) -> None:
    text = base(tmp_path) + (
        "devices:\n"
        "  - name: meter-01\n"
        "    driver: modbus\n"
        "    connection: {host: 127.0.0.1, port: 5020}\n"
        "    tags:\n"
        "      - {name: volts, table: holding, address: 100}\n"
        "      - name: power\n"
        "        table: holding\n"
        "        address: 40101\n"
        "      - {name: energy, table: input, address: 30001}\n")
    result = gateway(tmp_path, "check", text)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.stderr
    assert "warning: line 18: devices[0].tags[1].address: 40101 looks like 1-based Modicon" \
        in warnings[0]
    assert "likely means is 100" in warnings[0]
    assert "line 19: devices[0].tags[2].address" in warnings[1]
    assert "likely means is 0" in warnings[1]
    assert "OK: gateway edge-01, 1 device(s), 3 tag(s)" in result.stdout


def test_check_writable_lists_limits_and_warns_about_an_unbounded_tag(tmp_path: Path) -> None:
    text = base(tmp_path).replace("    url:", "    commands: true\n    url:") + (
        "devices:\n  - {name: press, driver: modbus, connection: {host: 127.0.0.1}, tags: ["
        "{name: rate, table: holding, address: 0, writable: true, min: 0, max: 60, unit: 1/min},"
        " {name: recipe, table: holding, address: 1, writable: true},"
        " {name: count, table: input, address: 0}]}\n")
    result = gateway(tmp_path, "check", text)
    assert result.returncode == 0, result.stderr
    assert "writable" not in result.stdout.split("OK:")[1]  # only with --writable
    path = tmp_path / "gateway.yaml"
    listed = subprocess.run([sys.executable, "-m", "gateway", "check", "--writable", "-c",
                             str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert listed.returncode == 0, listed.stderr
    assert "writable: 2 tag(s)" in listed.stdout
    assert "press.rate: range: 0..60 1/min, min_write_interval 100ms" in listed.stdout
    assert "press.count" not in listed.stdout
    assert "commands accepted on sink(s): mqtt" in listed.stdout
    assert "warning: press.recipe is writable without min/max" in listed.stderr
    assert "press.rate is writable without" not in listed.stderr

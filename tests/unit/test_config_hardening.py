"""Hostile and broken config files: every problem a clear error with key path and line, never a
traceback, never silently dropped; YAML bounded; the machine checked before `run` starts."""

from __future__ import annotations

import codecs
import os
import socket
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import load_config, parse_config
from gateway.config_loading import MAX_ALIAS_NODES, MAX_FILE_BYTES
from gateway.errors import ConfigError, ConfigProblem
from gateway.preflight import (
    buffer_path_problem,
    ca_file_problem,
    client_cert_problem,
    port_problem,
    preflight,
)
from gateway.units import parse_duration, parse_size

pytestmark = pytest.mark.unit

BASE = """\
gateway:
  id: edge-01
sinks:
  mqtt:
    url: mqtt://127.0.0.1:1883
"""

DEVICE = """\
devices:
  - name: press-01
    driver: modbus
    connection: {host: 127.0.0.1, port: 5020}
    tags:
      - {name: t1, table: holding, address: 1}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), "test.yaml", env or {})
    return [(p.line, p.path, p.message) for p in caught.value.problems]


def only_problem(text: str, env: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    found = problems(text, env)
    assert len(found) == 1, found
    return found[0]


# --- what check used to accept and run died of --------------------------------------------


def test_a_device_without_driver_is_an_error_at_its_line() -> None:
    line, path, message = only_problem(BASE + "devices:\n  - name: x\n    poll_interval: 1s\n")
    assert (line, path) == (7, "devices[0].driver")
    assert "required key is missing" in message and "modbus" in message


def test_a_driver_that_is_not_a_name_is_an_error() -> None:
    assert only_problem(BASE + "devices:\n  - name: x\n    driver: [modbus]\n")[1] == \
        "devices[0].driver"


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:", ":8080", "127.0.0.1:99999",
                                    "127.0.0.1:80a", "127.0.0.1 :8080"])
def test_http_listen_must_be_host_and_port(listen: str) -> None:
    text = BASE.replace("  id: edge-01\n", f"  id: edge-01\n  http:\n    listen: '{listen}'\n")
    line, path, message = only_problem(text)
    assert (line, path) == (4, "gateway.http.listen")
    assert "host:port" in message or "0-65535" in message


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "0.0.0.0:0", "localhost:65535",
                                    "[::1]:8080"])
def test_http_listen_accepts_host_and_port(listen: str) -> None:
    token = "\n    token: a-token-of-16-chars" if listen.startswith("0.0.0.0") else ""
    text = BASE.replace("  id: edge-01\n",
                        f"  id: edge-01\n  http:\n    listen: '{listen}'{token}\n")
    assert parse_config(text, env={}).gateway.http.listen == listen


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:99999", "mqtts://broker:0", "mqtt://:1883",
                                 "mqtt://broker:port"])
def test_mqtt_url_needs_a_host_and_a_port_from_1_to_65535(url: str) -> None:
    line, path, message = only_problem(BASE.replace("mqtt://127.0.0.1:1883", url))
    assert (line, path) == (5, "sinks.mqtt.url") and "1-65535" in message


def test_mqtt_url_without_port_is_accepted() -> None:
    config = parse_config(BASE.replace("mqtt://127.0.0.1:1883", "mqtt://broker"), env={})
    assert config.sinks["mqtt"] is not None and config.sinks["mqtt"].url == "mqtt://broker"


def test_poll_interval_below_10ms_is_refused_with_the_reason() -> None:
    line, path, message = only_problem(BASE + DEVICE.replace(
        "driver: modbus\n", "driver: modbus\n    poll_interval: 0.001ms\n"))
    assert (line, path) == (9, "devices[0].poll_interval")
    assert "at least 10ms" in message and "PLC" in message


def test_poll_interval_of_10ms_is_accepted() -> None:
    text = BASE + DEVICE.replace("driver: modbus\n", "driver: modbus\n    poll_interval: 10ms\n")
    assert parse_config(text, env={}).devices[0].poll_interval == pytest.approx(0.01)


@pytest.mark.parametrize("size", ["1.5", "100", "64KB", "0.5KiB", ".nan", "-1MiB"])
def test_buffer_max_size_without_unit_or_too_small_is_refused(size: str) -> None:
    text = BASE.replace("  id: edge-01\n", f"  id: edge-01\n  buffer:\n    max_size: {size}\n")
    assert only_problem(text)[:2] == (4, "gateway.buffer.max_size")


def test_buffer_max_size_with_a_unit_is_accepted() -> None:
    text = BASE.replace("  id: edge-01\n", "  id: edge-01\n  buffer:\n    max_size: 1.5GiB\n")
    assert parse_config(text, env={}).gateway.buffer.max_size == int(1.5 * 2**30)


@pytest.mark.parametrize(("key", "value"), [("scale", ".nan"), ("scale", ".inf"),
                                            ("offset", "-.inf"), ("offset", ".NaN")])
def test_scale_and_offset_must_be_finite(key: str, value: str) -> None:
    text = BASE + DEVICE.replace("address: 1}", f"address: 1, {key}: {value}}}")
    assert only_problem(text)[:2] == (11, f"devices[0].tags[0].{key}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1000d", True, [1], "1e3s"])
def test_insane_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [1.5, "1.5", "0.5B", float("inf"), -3, "2 pages", None])
def test_insane_sizes_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


def test_a_size_with_a_unit_may_have_a_fraction() -> None:
    assert parse_size("1.5KiB") == 1536


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"),
               max_size=40).filter(lambda s: "${" not in s))
def test_no_error_message_repeats_the_value_it_refuses(text: str) -> None:
    # A password pasted into the wrong key must not end up in a terminal or a support ticket.
    secret = "pw-" + text  # a prefix no message holds: a hit is the value, not a common word
    quoted = "'" + secret.replace("'", "''") + "'"
    text = BASE.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883\n"
                        f"    keepalive: {quoted}\n    qos: {quoted}\n"
                        f"    batch_size: {quoted}\n    max_rate: {quoted}")
    text = text.replace("  id: edge-01\n", f"  id: edge-01\n  shutdown_timeout: {quoted}\n"
                        f"  buffer: {{max_size: {quoted}, sync: {quoted}}}\n")
    try:
        parse_config(text, "test.yaml", {})
    except ConfigError as exc:
        assert secret not in exc.render()
    else:
        pytest.fail("a password is no valid duration, size, qos or number")


# --- files that are not clean UTF-8 YAML ----------------------------------------------------


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
           "utf-32-le": codecs.BOM_UTF32_LE}[encoding]
    path = write(tmp_path, bom + (BASE + "# Grüße\n").encode(encoding))
    assert load_config(path, env={}).gateway.id == "edge-01"


def test_utf8_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, codecs.BOM_UTF8 + BASE.encode()), env={}).gateway.id \
        == "edge-01"


def test_latin1_is_refused_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("edge-01", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert str(problem).startswith("line 2, column 10: the file is not UTF-8")
    assert "0xE9" in problem.message and "save it as UTF-8" in problem.message


def test_utf16_without_byte_order_mark_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="UTF-16 without a byte order mark"):
        load_config(write(tmp_path, BASE.encode("utf-16-le")), env={})


def test_a_nul_byte_is_refused_with_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("gateway:\n  id: a\x00b\n", "test.yaml", {})
    assert str(caught.value.problems[0]).startswith("line 2, column 8: a NUL byte")


def test_a_control_character_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"line 1, column 4: the control character U\+0007"):
        parse_config("a: \x07\n", "test.yaml", {})


@pytest.mark.parametrize(("key", "kind"), [("? [a, b]\n  : 1", "list"),
                                           ("? {a: 1}\n  : 1", "mapping"),
                                           ("[a]: 1", "list")])
def test_a_list_or_mapping_used_as_a_key_is_an_error(key: str, kind: str) -> None:
    line, path, message = only_problem(f"gateway:\n  id: a\n  {key}\nsinks: {{mqtt: {{}}}}\n")
    assert (line, path) == (3, "gateway") and message == f"a key must be a plain name, not a {kind}"


def test_a_merge_key_is_refused_clearly() -> None:
    message = only_problem("base: &b {id: a}\ngateway:\n  <<: *b\nsinks: {mqtt: {}}\n")[2]
    assert "merge keys (<<) are not supported" in message


@pytest.mark.parametrize(("text", "words"), [
    ("gateway:\n  id: " + "1" * 5000 + "\n", "cannot be read as int"),
    ("gateway:\n  id: !!python/object:os.system x\n", "YAML tag"),
    ("gateway:\n  id: !!binary 'a'\n", "cannot be read as binary"),
])
def test_values_yaml_cannot_build_are_errors(text: str, words: str) -> None:
    assert words in only_problem(text + "sinks: {mqtt: {}}\n")[2]


def test_a_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ConfigError, match="larger than 32 MiB"):
        load_config(path, env={})


def test_a_directory_given_as_the_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


# --- bounded YAML ---------------------------------------------------------------------------


def alias_bomb(levels: int = 26) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_27_line_alias_bomb_is_refused_at_once() -> None:
    assert alias_bomb().count("\n") == 27
    started = time.monotonic()
    line, _, message = only_problem(alias_bomb())
    assert time.monotonic() - started < 5
    assert line == 6  # l5: its third *l4 takes the expansion past the limit
    assert f"expand to more than {MAX_ALIAS_NODES:,} values" in message


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert "a loop" in only_problem("a: &x [1, *x]\n")[2]


def test_aliases_share_a_connection_between_devices() -> None:
    text = BASE + textwrap.dedent("""\
        devices:
          - name: a
            driver: modbus
            connection: &plc {host: 127.0.0.1, port: 5020}
            tags: &tags [{name: t, table: coil, address: 0, type: bool}]
          - {name: b, driver: modbus, connection: *plc, tags: *tags}
        """)
    config = parse_config(text, env={})
    assert [d.connection.port for d in config.devices] == [5020, 5020]  # type: ignore[attr-defined]


def test_nesting_deeper_than_a_config_is_refused() -> None:
    assert "nested too deeply" in only_problem("a: " + "[" * 5000 + "]" * 5000 + "\n")[2]


# --- YAML syntax errors in plain words ------------------------------------------------------


def syntax(text: str) -> tuple[int | None, list[str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    (problem,) = caught.value.problems
    return problem.line, str(problem).split("\n")


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    ("gateway:\n\tid: a\n", 2, 1, "a tab character: YAML indents with spaces only"),
    ("gateway:\n  id: a\n    site: b\n", 3, 9, "indented deeper than the one above"),
    ("gateway:\n    id: a\n  site: b\n", 3, 3, "does not line up with the lines above"),
    ("devices:\n  - name: a\n - name: b\n", 3, 2, "does not line up with the lines above"),
    ("gateway:\n  id: a\n  site b\nsinks: {}\n", 3, 3, "a key without a colon"),
    ("x: {a: 1, b: 2\ny: 3\n", 2, 2, "a ',' or '}' is missing in the {...} opened on line 1"),
    ("x: [a, b\ny: 3\n", 2, 2, "a ',' or ']' is missing in the [...] opened on line 1"),
    ('x: "abc\ny: 2\n', 1, 4, "the quote opened on line 1 is never closed"),
    ("a: 1\n---\nb: 2\n", 2, 1, "more than one YAML document"),
    ("a: @x\n", 1, 4, "put the value in quotes"),
    ("a: *nowhere\n", 1, 4, "an alias (*name) without an anchor"),
    ("x: [a] ]\n", 1, 8, "a ']' without its opening '['"),
])
def test_yaml_syntax_errors_say_what_is_wrong_with_line_and_caret(
        text: str, line: int, column: int, words: str) -> None:
    problem_line, rendered = syntax(text)
    assert problem_line == line
    assert rendered[0].startswith(f"line {line}, column {column}: YAML syntax: ")
    assert words in rendered[0] and "<block" not in rendered[0]
    source_line, caret = rendered[1], rendered[2]
    assert source_line.strip() == text.split("\n")[line - 1].strip()
    assert caret.index("^") - 6 == column - 1
    assert source_line[6:] == text.split("\n")[line - 1].rstrip()


def test_the_caret_shows_a_window_of_a_long_line() -> None:
    _, rendered = syntax("x: [" + "a, " * 100 + "b\ny: 1\n")
    assert len(rendered[1]) < 90 and rendered[2].endswith("^")


def test_a_syntax_error_on_a_line_with_a_variable_keeps_its_caret_on_the_original_text() -> None:
    _, rendered = syntax("x: {a: ${LONG_VARIABLE_NAME}, b: 2\ny: 3\n")
    assert "${LONG_VARIABLE_NAME}" not in rendered[1]  # the error is on line 2
    line = "x: {a: ${LONG_VARIABLE}, b: c: d}"
    _, rendered = syntax(line + "\n")
    assert rendered[1][6:] == line
    assert rendered[2].index("^") - 6 == line.index("c: d") + 1


# --- did you mean ---------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "where", "meant"), [
    ("  id: edge-01\n", "  id: edge-01\n  buffer: {max_sise: 1GiB}\n", "max_size"),
    ("    driver: modbus\n", "    driver: modbus\n    pol_interval: 1s\n", "poll_interval"),
    ("address: 1}", "adress: 1}", "address"),
    ("url: mqtt://127.0.0.1:1883", "url: mqtt://127.0.0.1:1883\n    kepalive: 3s", "keepalive"),
])
def test_unknown_keys_get_did_you_mean(typo: str, where: str, meant: str) -> None:
    text = (BASE + DEVICE).replace(typo, where)
    messages = [message for _, _, message in problems(text) if "unknown key" in message]
    assert messages and f"did you mean {meant!r}?" in messages[0]


def test_an_unknown_key_with_no_close_match_lists_the_keys_allowed_there() -> None:
    text = BASE.replace("  id: edge-01\n", "  id: edge-01\n  buffer: {zzz: 1}\n")
    assert only_problem(text)[2] == "unknown key (expected one of: max_size, path, sync)"


# --- ${VAR} anywhere --------------------------------------------------------------------------


def test_a_variable_inside_a_flow_mapping_is_substituted() -> None:
    text = "gateway: {id: a}\nsinks: {mqtt: {url: 'mqtt://h:1883', password: ${P}}}\n"
    config = parse_config(text, env={"P": "pa:ss}, {x: #1"})
    assert config.sinks["mqtt"] is not None and config.sinks["mqtt"].password is not None
    assert config.sinks["mqtt"].password.get_secret_value() == "pa:ss}, {x: #1"


def test_a_substituted_value_cannot_change_the_structure() -> None:
    text = "gateway: {id: '${ID}'}\nsinks: {mqtt: {username: ${U}}}\n"
    config = parse_config(text, env={"ID": "a", "U": "x\nsinks: {}\n  evil: 1"})
    assert config.sinks["mqtt"] is not None and config.sinks["mqtt"].username == \
        "x\nsinks: {}\n  evil: 1"


def test_defaults_work_in_flow_mappings_and_quoted_strings() -> None:
    text = "gateway: {id: \"${ID:-edge-9}\"}\nsinks: {mqtt: {url: ${URL:-mqtt://h:1883}}}\n"
    config = parse_config(text, env={})
    assert config.gateway.id == "edge-9"
    assert config.sinks["mqtt"] is not None and config.sinks["mqtt"].url == "mqtt://h:1883"


def test_an_unset_variable_in_a_flow_mapping_names_its_line() -> None:
    text = "gateway: {id: a}\nsinks:\n  mqtt: {url: 'mqtt://h:1883', password: ${P}}\n"
    assert only_problem(text)[:2] == (3, "sinks.mqtt.password")



def test_an_unset_token_is_named_once_not_also_called_missing() -> None:
    """`token: ${T}` unset reads as empty; "set a token" on top would send the reader to the
    file instead of the environment (deploy/gateway.yaml on a first `gateway check`)."""
    text = ("gateway: {id: a, http: {listen: '0.0.0.0:8080', token: '${T}'}}\n"
            "sinks: {mqtt: {url: 'mqtt://h:1883'}}\n")
    line, path, message = only_problem(text)[:3]
    assert (line, path) == (1, "gateway.http.token")
    assert "environment variable T is not set" in message
    assert "at least 16 characters" in only_problem(text, {"T": "short"})[2]


# --- the machine: buffer path, certificates, ports ------------------------------------------


def test_a_buffer_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in (buffer_path_problem(str(tmp_path)) or "")


def test_a_buffer_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file" in (buffer_path_problem(str(tmp_path / "file" / "sub" / "b.db")) or "")


def test_a_buffer_in_a_folder_that_cannot_be_written_is_refused() -> None:
    if os.access("/sys", os.W_OK) and buffer_path_problem("/sys/x.db") is None:
        pytest.skip("/sys is writable here")
    assert "cannot be created" in (buffer_path_problem("/sys/gateway/buffer.db") or "")


def test_a_buffer_in_missing_folders_is_fine_and_nothing_is_left_behind(tmp_path: Path) -> None:
    assert buffer_path_problem(str(tmp_path / "a" / "b" / "buffer.db")) is None
    assert list(tmp_path.iterdir()) == []


def test_ca_file_missing_or_not_pem(tmp_path: Path) -> None:
    assert "not found" in (ca_file_problem(str(tmp_path / "ca.pem")) or "")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    assert "not a PEM CA certificate" in (ca_file_problem(str(tmp_path / "ca.pem")) or "")


def test_a_pem_ca_and_a_matching_client_pair_pass(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "a")
    assert ca_file_problem(str(cert)) is None
    assert client_cert_problem(str(cert), str(key)) is None


def test_a_client_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "a")
    _, other_key = self_signed(tmp_path, "b")
    assert "cannot be loaded" in (client_cert_problem(str(cert), str(other_key)) or "")
    assert "not found" in (client_cert_problem(str(cert), str(tmp_path / "nope")) or "")


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_port_in_use_names_the_port_and_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = port_problem("127.0.0.1", port, "gateway.http.listen") or ""
    assert f"port {port} is already in use" in message and "gateway.http.listen" in message


def test_an_address_not_of_this_machine_is_named() -> None:
    message = port_problem("192.0.2.1", 8080, "gateway.http.listen") or ""  # TEST-NET-1
    assert "cannot listen on 192.0.2.1:8080" in message


def test_preflight_reports_by_key_path_and_line(tmp_path: Path) -> None:
    text = BASE.replace("mqtt://127.0.0.1:1883", f"mqtts://127.0.0.1:8883\n"
                        f"    ca: {tmp_path / 'missing.pem'}")
    text = text.replace("  id: edge-01\n", f"  id: edge-01\n  buffer:\n    path: {tmp_path}\n"
                        "  http: {listen: '127.0.0.1:0'}\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    from gateway.config import load_config_with_lines

    found = preflight(*load_config_with_lines(path, env={}))
    assert [(p.line, p.path) for p in found.errors] == [(4, "gateway.buffer.path"),
                                                         (9, "sinks.mqtt.ca")]
    assert found.busy_ports == []


# --- the event reader reads what PyYAML reads -----------------------------------------------

plain_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Co")),
                     max_size=12).filter(lambda s: "${" not in s)
scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | plain_text)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(plain_text, inner, max_size=4), max_leaves=20)


@given(documents, st.booleans())
def test_the_event_reader_reads_what_pyyaml_reads(data: object, flow: bool) -> None:
    import yaml

    from gateway.config_loading import load_yaml

    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    env_problems: list[ConfigProblem] = []
    assert load_yaml(text, "t.yaml", {}, env_problems)[0] == yaml.safe_load(text)
    assert env_problems == []

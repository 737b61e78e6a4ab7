"""The README is one screen to live data and a first PLC, then links: the links resolve, the
two quick-start commands are there exactly, and the long sections live in docs/."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
QUICK_START = ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gateway demo",
               "bash tests/run")


def relative_links(markdown: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and t[0] != "#"]


def test_the_two_quick_start_commands_are_there_exactly_and_early() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None
    lines = [line.split("#")[0].strip() for line in block[1].splitlines()]
    assert lines == list(QUICK_START)
    assert README.index(QUICK_START[0]) < README.index("## Your first PLC") < 3000


def test_a_fresh_machine_is_told_what_to_install_and_which_python() -> None:
    assert "apt install python3-venv git" in README
    assert "Python 3.11 or newer" in README
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_the_readme_is_short_and_every_link_resolves() -> None:
    assert len(README.splitlines()) <= 130
    links = relative_links(README)
    assert len(links) >= 15
    for link in links:
        assert (ROOT / link).is_file(), link
    for topic in ("configuration", "modbus", "opcua", "sparkplug", "cli", "oee", "operating",
                  "troubleshooting", "performance", "buffer"):
        assert f"docs/{topic}.md" in links, topic


def test_links_inside_docs_resolve() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for link in relative_links(page.read_text()):
            assert (page.parent / link).resolve().exists(), f"{page.name}: {link}"


def test_the_long_sections_moved_to_docs() -> None:
    performance = (ROOT / "docs" / "performance.md").read_text()
    assert "`bash bench/run --json results.json`: every scenario" in performance
    assert len(performance.splitlines()) > 150
    assert "field type conflict" in (ROOT / "docs" / "troubleshooting.md").read_text()
    assert "byte_order | word_order" in (ROOT / "docs" / "modbus.md").read_text()
    assert "server_fingerprint" in (ROOT / "docs" / "opcua.md").read_text()
    assert "`${NAME}` and `${NAME:-default}`" in (ROOT / "docs" / "config-basics.md").read_text()


def test_the_license_is_the_apache_2_text_pyproject_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    license_field = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert "Apache-2.0" in str(license_field)


def first_plc_commands() -> list[list[str]]:
    """The `.venv/bin/...` commands of the README's "Your first PLC" steps, as argv lists."""
    section = README.split("## Your first PLC")[1].split("\n## ")[0]
    commands = re.findall(r"`\.venv/bin/([^`]+)`", section)
    return [shlex.split(command) for command in commands]


def test_every_first_plc_command_exists_with_its_options() -> None:
    """A step the newcomer types must parse: the command, its subcommand and every option."""
    from gateway.cli import _parser as gateway_parser
    from simulators.__main__ import _parser as simulators_parser

    commands = first_plc_commands()
    assert {c[0] for c in commands} == {"gateway", "python"}
    assert {c[1] for c in commands if c[0] == "gateway"} >= {"discover", "check", "run", "status"}
    for argv in commands:
        if argv[0] == "gateway":
            gateway_parser().parse_args(argv[1:])
        else:
            assert argv[1:3] == ["-m", "simulators"], argv
            simulators_parser().parse_args(argv[3:])


def test_the_first_plc_steps_say_what_the_sinks_and_the_simulator_need() -> None:
    """Without a broker `gateway run` retries forever; without a PLC there is the simulator,
    on the port the example config polls."""
    section = README.split("## Your first PLC")[1].split("\n## ")[0]
    assert "apt install mosquitto" in section and "delete `influxdb:`" in section
    example = (ROOT / "config" / "modbus-demo.yaml").read_text()
    assert "port: 5020" in example and "port 5020" in section
    assert "mqtt://127.0.0.1:1883" in example
    # The file the later steps name is the one the first step makes.
    assert "`cp config/modbus-demo.yaml my.yaml`" in section
    assert all("my.yaml" in c for c in map(" ".join, first_plc_commands())
               if c.split()[1] in {"check", "run", "status"})


def test_the_mqtt_client_commands_come_with_their_package() -> None:
    """`mosquitto_sub`/`mosquitto_pub` are in mosquitto-clients, not in a fresh Debian or
    Ubuntu (nor in the `mosquitto` package the first PLC steps install)."""
    quick_start = README.split("## Quick start")[1].split("\n## ")[0]
    assert "mosquitto_sub" in quick_start and "mosquitto_pub" in quick_start
    assert "sudo apt install mosquitto-clients" in quick_start

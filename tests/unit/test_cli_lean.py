"""`gateway run` (and the other lean commands) do not import what only discover, probe, simulate
and drill need: asyncua and aiohttp alone are about 26 MiB of RSS (docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.cli import _command_word, _parser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("argv", "word"), [
    (["run", "--config", "x.yaml"], "run"),
    (["--log-level", "warning", "run", "-c", "x"], "run"),
    (["--log-format", "json", "discover", "opc.tcp://h:4840"], "discover"),
    (["--version"], None),
    ([], None),
])
def test_the_command_word_skips_top_level_options(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word


def test_a_lean_parser_imports_no_opcua_client_nor_simulators() -> None:
    code = ("import sys; from gateway.cli import _parser; _parser(lean=True)"
            ".parse_args(['run', '-c', 'x']); "
            "print(sorted(m for m in ('asyncua', 'simulators', 'drivers.opcua.discover')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_full_parser_still_knows_every_command_and_its_arguments() -> None:
    parser = _parser()
    for command in ("discover", "probe", "simulate", "drill"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0

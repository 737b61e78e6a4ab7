"""`--help` lists every command and shows the defaults a newcomer needs."""

import pytest

from gateway.cli import _parser as gateway_parser
from simulators.__main__ import _parser as simulators_parser

pytestmark = pytest.mark.unit


def test_gateway_help_names_every_command_in_its_description() -> None:
    text = gateway_parser().format_help()
    head = text.split("positional arguments")[0]
    for command in ("demo", "run", "check", "reload", "status", "discover", "schema"):
        assert command in head, command


def test_simulators_help_shows_the_defaults() -> None:
    text = " ".join(simulators_parser().format_help().split())
    for default in ("(default: 127.0.0.1)", "(default: 5020)", "(default: 19200)",
                    "(default: 0)", "(default: 100ms)", "default: no OPC UA server"):
        assert default in text, default
    assert "(default: None)" not in text and "(default: False)" not in text

"""`gateway simulate --config FILE`: serve the twins until SIGTERM/SIGINT and print the config
that points a gateway at them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError


class TwinError(GatewayError):
    """A config that has nothing to simulate, or a twin that cannot start."""


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="YAML config file")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the twins listen on (default 127.0.0.1)")
    parser.add_argument("--print-config", metavar="OUT", default=None,
                        help="write the config pointed at the twins to OUT (default: stdout)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")


def load_both(path: str) -> tuple[GatewayConfig, dict[str, Any]]:
    """The validated config (a ConfigError says what is wrong) and the file's own mapping."""
    config = load_config(path)
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return config, raw


def run_simulate(args: argparse.Namespace) -> int:
    config, raw = load_both(args.config)
    return asyncio.run(_serve(config, raw, args))


async def _serve(config: GatewayConfig, raw: dict[str, Any], args: argparse.Namespace) -> int:
    from gateway.signals import stop_on_signals
    from simulators.twin.runner import Twins

    twins = Twins(config, raw, host=args.host)
    if not twins.layout.modbus and not twins.layout.opcua:
        raise TwinError(f"{args.config}: no Modbus or OPC UA device to simulate")
    stop = stop_on_signals()
    try:
        async with twins:
            _print_config(twins.config, args.print_config)
            for line in twins.describe():
                print(f"simulate: {line}", file=sys.stderr, flush=True)
            print("simulate: serving; Ctrl-C stops", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
    except OSError as exc:
        raise TwinError(f"a twin cannot listen on {args.host}: {exc}") from exc
    return 0


def _print_config(config: dict[str, Any], out: str | None) -> None:
    text = "# Pointed at the twins of `gateway simulate`\n" + yaml.safe_dump(
        config, sort_keys=False, default_flow_style=None, width=100)
    if out is None:
        print(text, flush=True)
    else:
        Path(out).write_text(text, encoding="utf-8")
        print(f"simulate: config for the twins written to {out}", file=sys.stderr, flush=True)

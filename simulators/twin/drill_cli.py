"""`gateway drill` arguments (the drill itself is simulators/twin/drill.py)."""

from __future__ import annotations

import argparse


def add_drill_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="YAML config file")
    parser.add_argument("--json", metavar="REPORT", default=None,
                        help="also write the report as JSON to REPORT")
    parser.add_argument("--minutes", type=float, default=2.5,
                        help="about how long the whole drill takes (default 2.5; the faults' "
                        "phases scale with it)")


def run_drill(args: argparse.Namespace) -> int:
    from simulators.twin.drill import drill_main

    return drill_main(args)

"""pytest fixtures for integrators (entry point `pytest11: gateway_twin`): prove a plant's own
config in CI, with no hardware and no external service.

- `gateway_twin(path)`: an async context manager serving the twins of the config at `path`;
  it yields `Twins` (`.config` is the config pointed at them, `.value_of(device, tag)` what a
  twin holds, `.freeze()` stops its values moving).
- `gateway_drill(path, minutes=0.5)`: runs `gateway drill` on the config (a subprocess, as in
  production) and returns the report (the `--json` dict, plus `exit_code`).

See docs/simulate-and-drill.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

TwinFactory = Callable[[str | os.PathLike[str]], AbstractAsyncContextManager[Any]]
DrillRunner = Callable[..., dict[str, Any]]


@contextlib.asynccontextmanager
async def serve_twins(path: str | os.PathLike[str], host: str = "127.0.0.1"
                      ) -> AsyncIterator[Any]:
    from simulators.twin.cli import load_both
    from simulators.twin.runner import Twins

    config, raw = load_both(str(path))
    async with Twins(config, raw, host=host) as twins:
        yield twins


def run_drill(path: str | os.PathLike[str], minutes: float = 0.5, timeout: float = 600,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """`gateway drill --config PATH --minutes N --json ...`: its report with `exit_code`."""
    with tempfile.TemporaryDirectory(prefix="gateway-drill-report-") as workdir:
        report_path = Path(workdir) / "report.json"
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "--log-level", "warning", "drill", "--config",
             str(path), "--minutes", str(minutes), "--json", str(report_path)],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
        if not report_path.exists():
            raise AssertionError(f"gateway drill made no report (exit {result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(report_path.read_text())
    report["exit_code"] = result.returncode
    report["output"] = result.stdout
    return report


@pytest.fixture
def gateway_twin() -> TwinFactory:
    """`async with gateway_twin("configs/plant.yaml") as twins: ...`"""
    return serve_twins


@pytest.fixture
def gateway_drill() -> DrillRunner:
    """`report = gateway_drill("configs/plant.yaml", minutes=0.5); assert report["lost"] == 0`"""
    return run_drill

"""tests/run on Ubuntu: chromium is a snap there, so apt is not asked for it and the script
says what to install instead (TESTS_RUN_PLAN=1 prints the plan without installing)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
ALL_MISSING = "mosquitto influxdb chromium chromium-driver"


def plan(tmp_path: Path, os_release: str, missing: str = ALL_MISSING) -> str:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    env = {**os.environ, "TESTS_RUN_PLAN": "1", "OS_RELEASE": str(release),
           "TESTS_RUN_MISSING": missing}
    result = subprocess.run(["bash", str(ROOT / "tests" / "run")], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ubuntu_leaves_chromium_to_snap_and_says_how(tmp_path: Path) -> None:
    out = plan(tmp_path, 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n')
    assert "distribution: ubuntu" in out
    assert "apt packages: mosquitto influxdb\n" in out
    assert "sudo snap install chromium" in out
    assert "/snap/bin/chromium.chromedriver /usr/bin/chromedriver" in out


def test_an_ubuntu_derivative_is_ubuntu_too(tmp_path: Path) -> None:
    out = plan(tmp_path, 'ID=linuxmint\nID_LIKE="ubuntu debian"\n')
    assert "distribution: ubuntu" in out and "snap install chromium" in out


def test_debian_installs_chromium_with_apt(tmp_path: Path) -> None:
    out = plan(tmp_path, 'ID=debian\nVERSION_ID="12"\n')
    assert f"apt packages: {ALL_MISSING}\n" in out
    assert "snap" not in out


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    out = plan(tmp_path, "ID=ubuntu\n", missing="")
    assert "apt packages: none" in out and "snap" not in out

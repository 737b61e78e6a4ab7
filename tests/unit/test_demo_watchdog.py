"""The demo's teardown watchdog: a stop that never lets go still ends the process, says so,
and leaves every thread's stack in the log; a disarmed watchdog ends nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STALL = """
import sys, threading, time
from pathlib import Path
from gateway.demo import TeardownWatchdog
watchdog = TeardownWatchdog()
watchdog.arm(0.3, Path(sys.argv[1]))
if sys.argv[2] == "disarm":
    watchdog.disarm()
    time.sleep(1.5)  # five times the limit
    print("ended on its own")
else:
    threading.Event().wait()  # a teardown that never ends (blocks the main thread, as a join)
"""


def run(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "gateway.log"
    done = subprocess.run([sys.executable, "-c", STALL, str(log), mode], capture_output=True,
                          text=True, timeout=60)
    return done, log


def test_a_stalled_teardown_ends_the_process_and_logs_every_stack(tmp_path: Path) -> None:
    done, log = run(tmp_path, "stall")
    assert done.returncode == 1
    assert "stopping took over 0.3s; ending it now" in done.stderr
    assert str(log) in done.stderr
    dump = log.read_text()
    assert "teardown stalled for 0.3s" in dump
    assert "most recent call first" in dump and "wait" in dump  # the main thread's stack


def test_a_disarmed_watchdog_ends_nothing(tmp_path: Path) -> None:
    done, log = run(tmp_path, "disarm")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ended on its own"
    assert not log.exists()

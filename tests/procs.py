"""Starting and stopping real services for tests: free loopback ports, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from simulators.ports import free_port as free_port  # the one helper, re-exported for tests


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Poll `predicate` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class Service:
    """A real server process started for tests; `stop()` always reaps it."""

    def __init__(self, name: str, argv: Sequence[str], port: int, workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.workdir = workdir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env=env, start_new_session=True)
        log.close()
        check = ready or (lambda: port_open(self.port))
        try:
            wait_for(lambda: self._alive() and check(), timeout, f"{self.name} to start")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; log:\n{self.log()}") from None

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(5)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(5)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (the gateway's clean stop), then SIGKILL if it is not gone within `timeout`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """`wait_for` for coroutines: the predicate runs in a thread, so a server living in the
    test's own event loop (the simulator) keeps answering meanwhile."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

"""`gateway demo`'s live view in a real 80x24 terminal: a pty, read through pyte (a terminal
emulator), so what is asserted is what a person would see on the screen."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyte
import pytest

pytestmark = pytest.mark.integration

COLUMNS, LINES = 80, 24


class Terminal:
    """A process on the slave side of a pty of COLUMNS x LINES, its screen emulated by pyte."""

    def __init__(self, argv: list[str], path: str | None = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS),
               "LINES": str(LINES), "PATH": path or os.environ.get("PATH", "")}
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                        start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process ended and closed the pty
                return
            self.raw += data
            self.stream.feed(data)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if condition():
                return
            if self.process.poll() is not None:
                break
        raise AssertionError(f"{what} not on screen within {timeout}s:\n{self.text()}")

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.pump(0.3)
        os.close(self.master)


@pytest.fixture
def demo_terminal(tmp_path: Path) -> Iterator[Terminal]:
    """The demo on a machine without mosquitto_sub (PATH: an empty folder), the fullest
    summary: it also says what to install."""
    terminal = Terminal([sys.executable, "-m", "gateway", "demo", "--duration", "60",
                         "--mqtt-port", "0", "--http-port", "0"], path=str(tmp_path))
    try:
        yield terminal
    finally:
        terminal.close()


def tag_rows(lines: list[str]) -> list[tuple[str, str]]:
    """(device, tag) of the table's rows: lines with a quality word in them."""
    rows = []
    for line in lines:
        if (re.search(r"\b(good|bad|uncertain)\b", line)
                and not line.startswith(("devices", "page ", "last log"))):
            device, tag = line.split()[:2]
            rows.append((device, tag))
    return rows


def test_the_demo_fits_80x24_with_its_summary_sinks_and_distinct_names(
        demo_terminal: Terminal) -> None:
    term = demo_terminal
    term.wait_for(lambda: len(tag_rows(term.lines())) >= 10 and "messages" in term.text(),
                  60, "a full frame")
    text = term.text()
    assert re.search(r"devices 4: \d answering, \d not answering", text), text
    assert "mqtt connected" in text, text
    assert "status page http://127.0.0.1:" in text
    assert "mosquitto_sub -h 127.0.0.1 -p " in text and "-t 'demo/#'" in text
    assert "no mosquitto_sub here: sudo apt install mosquitto-clients" in text
    assert re.search(r"page 1/\d+", text) and "q quit" in text
    assert "WARNING" not in text and "Traceback" not in text
    rows = tag_rows(term.lines())
    assert len(rows) == len(set(rows)), rows  # every shown name can be told apart
    assert len(rows) >= LINES - 10  # as many tags as fit: the summary takes a few lines only


def test_keys_page_and_filter_to_one_device(demo_terminal: Terminal) -> None:
    term = demo_terminal
    # every tag in (cnc-01's subscription is the last to arrive): the pages hold still
    term.wait_for(lambda: re.search(r"\((4[3-9]|[5-9]\d) topics\)", term.text()) is not None
                  and "devices 4: 4 answering" in term.text(), 60, "every tag")
    term.pump(1.5)
    pages = int(re.search(r"page 1/(\d+)", term.text())[1])  # type: ignore[index]
    assert pages >= 2  # 43 tags do not fit in 24 lines
    first = tag_rows(term.lines())
    term.press("n")
    term.wait_for(lambda: "page 2/" in term.text(), 20, "page 2")
    assert not set(tag_rows(term.lines())) & set(first)
    term.press("d")
    term.wait_for(lambda: "[device " in term.text(), 20, "a device filter")
    device = re.search(r"\[device ([\w-]+)\]", term.text())[1]  # type: ignore[index]
    assert {d for d, _ in tag_rows(term.lines())} == {device}
    term.press("q")
    term.wait_for(lambda: term.process.poll() is not None, 90, "the demo ending on q")
    term.pump(0.5)
    assert "demo: stopped" in term.raw.decode(errors="replace")
    assert term.process.returncode == 0


def test_device_option_starts_the_view_on_that_device() -> None:
    terminal = Terminal([sys.executable, "-m", "gateway", "demo", "--duration", "60",
                         "--mqtt-port", "0", "--http-port", "0", "--device", "packer-03"])
    try:
        terminal.wait_for(lambda: "[device packer-03]" in terminal.text()
                          and len(tag_rows(terminal.lines())) >= 5, 60, "packer-03's tags")
        assert {device for device, _ in tag_rows(terminal.lines())} == {"packer-03"}
    finally:
        terminal.close()


def test_an_unknown_device_is_one_line_naming_the_demos_devices() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "5",
                             "--mqtt-port", "0", "--http-port", "0", "--device", "packer-3"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --device packer-3: the demo has no such device; its devices are press-01, "
        "moulding-02, packer-03, cnc-01"], result.stderr

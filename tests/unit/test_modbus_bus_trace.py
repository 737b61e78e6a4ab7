"""The bus trace's split of an exchange, on stamps made up to known stages."""

from __future__ import annotations

from bench.modbus_bus_trace import report


def stamps(n: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Exchanges every 10 ms: written at 0, arrived +1 ms, sent +7 ms (wire 5.5 ms, so 0.5 ms
    late), read back +8 ms, the next request written 2 ms later."""
    written = [0.010 * i for i in range(n)]
    gateway = {"written": written, "read": [t + 0.008 for t in written]}
    sim = {"arrived": [t + 0.001 for t in written], "sent": [t + 0.007 for t in written],
           "wire": [0.0055] * n}
    return gateway, sim


def line(lines: list[str], name: str) -> str:
    return next(entry for entry in lines if entry.startswith(name))


def test_each_stage_gets_its_share() -> None:
    gateway, sim = stamps(50)
    lines = report(gateway, sim, started=0.0, cpu=0.049)
    assert lines[0].startswith("49 exchanges, gateway CPU 1.000 ms")
    assert "mean 10.000 ms" in line(lines, "exchange")
    assert "mean  2.000 ms" in line(lines, "gateway turnaround")
    assert "mean  1.000 ms" in line(lines, "hop in")
    assert "mean  0.500 ms" in line(lines, "pacing error")
    assert "mean  1.000 ms" in line(lines, "hop out")


def test_simulator_stamps_before_the_start_are_skipped() -> None:
    gateway, sim = stamps(20)
    sim = {k: [-1.0] * 3 + v for k, v in sim.items()}  # requests of the connect, say
    assert "mean  1.000 ms" in line(report(gateway, sim, started=0.0, cpu=0.0), "hop in")


def test_answers_read_in_pieces_are_reported_not_miscounted() -> None:
    gateway, sim = stamps(10)
    gateway["read"] = gateway["read"] + [1.0]
    assert report(gateway, sim, started=0.0, cpu=0.0)[0].startswith("error: 11 reads")

"""The drill's accounting (pure): which sequence readings the twins served in each phase, which
of them reached each sink, and what that says per fault (lost, duplicates, recovery time,
worst latency)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Served = dict[str, list[tuple[int, float]]]  # device -> (sequence, wall time served)
Received = dict[str, dict[str, list[tuple[int, float]]]]  # sink -> device -> (sequence, time)


@dataclass
class Phase:
    """One fault: injected at `start`, cleared at `cleared`, phase over at `end`. `blind`
    devices cannot be read while it lasts (their sequence moves without reads: subscriptions),
    so what they served from `start` until their first reading after `cleared` is not counted
    as polled. `kill_marks`: the last sequence each device had served when the gateway was
    SIGKILLed (that one poll may have been answered and never buffered) or its PLC restarted
    (that answer may have gone down with the connection); not counted if a sink lacks it."""

    name: str
    start: float
    cleared: float
    end: float
    affected: list[str] = field(default_factory=list)
    blind: list[str] = field(default_factory=list)
    kill_marks: dict[str, int] = field(default_factory=dict)
    note: str = ""


def phase_report(phase: Phase, served: Served, received: Received) -> dict[str, Any]:
    arrivals = {sink: {d: _first_arrivals(rows) for d, rows in by_device.items()}
                for sink, by_device in received.items()}
    counted, unbuffered, unread = _counted(phase, served, arrivals)
    delivered, lost, duplicates, latency = {}, 0, 0, 0.0
    for sink, by_device in received.items():
        got = 0
        for device, numbers in counted.items():
            first = arrivals[sink].get(device, {})
            got += sum(1 for n in numbers if n in first)
            latency = max([latency, *(first[n] - numbers[n] for n in numbers if n in first)])
            repeats = Counter(n for n, _ in by_device.get(device, []) if n in numbers)
            duplicates += sum(c - 1 for c in repeats.values())
        delivered[sink] = got
        lost += sum(len(v) for v in counted.values()) - got
    return {"name": phase.name, "polled": sum(len(v) for v in counted.values()),
            "delivered": delivered, "lost": lost, "duplicates": duplicates,
            "recovery_s": _recovery(phase, counted, served, arrivals),
            "worst_latency_s": round(latency, 3), "unbuffered_at_kill": unbuffered,
            "unread": unread, "note": phase.note}


def _first_arrivals(rows: list[tuple[int, float]]) -> dict[int, float]:
    first: dict[int, float] = {}
    for number, at in rows:
        first.setdefault(number, at)
    return first


def _counted(phase: Phase, served: Served, arrivals: dict[str, dict[str, dict[int, float]]]
             ) -> tuple[dict[str, dict[int, float]], int, int]:
    """Per device, the sequence numbers served in the phase that count (number -> served at)."""
    counted: dict[str, dict[int, float]] = {}
    unbuffered = unread = 0
    for device, rows in served.items():
        numbers = {n: t for n, t in rows if phase.start <= t < phase.end}
        if device in phase.blind:
            seen_after = [numbers[n] for a in arrivals.values() for n in a.get(device, {})
                          if n in numbers and numbers[n] >= phase.cleared]
            blind_until = min(seen_after, default=phase.end)
            before = len(numbers)
            numbers = {n: t for n, t in numbers.items() if not phase.start <= t < blind_until}
            unread += before - len(numbers)
        mark = phase.kill_marks.get(device)
        if mark in numbers and any(mark not in a.get(device, {}) for a in arrivals.values()):
            del numbers[mark]  # answered in the instant of the kill, never buffered
            unbuffered += 1
        counted[device] = numbers
    return counted, unbuffered, unread


def _recovery(phase: Phase, counted: dict[str, dict[int, float]], served: Served,
              arrivals: dict[str, dict[str, dict[int, float]]]) -> float | None:
    """Seconds from the fault's end until every sink had every reading served before it and a
    new reading of every affected device; None if that never happened in the phase."""
    done = phase.cleared
    for first in arrivals.values():
        for device, numbers in counted.items():
            backlog = [first.get(device, {}).get(n) for n, t in numbers.items()
                       if t < phase.cleared]
            if any(at is None for at in backlog):
                return None
            done = max([done, *(at for at in backlog if at is not None)])
            if device in phase.affected:
                fresh = [first.get(device, {}).get(n) for n, t in served.get(device, [])
                         if t >= phase.cleared]
                arrived = [at for at in fresh if at is not None]
                if not arrived:
                    return None
                done = max(done, min(arrived))
    return round(done - phase.cleared, 3)


def drill_report(phases: list[Phase], served: Served, received: Received) -> dict[str, Any]:
    faults = [phase_report(p, served, received) for p in phases]
    delivered = {sink: sum(f["delivered"].get(sink, 0) for f in faults) for sink in received}
    return {"faults": faults, "polled": sum(f["polled"] for f in faults),
            "delivered": delivered, "lost": sum(f["lost"] for f in faults),
            "duplicates": sum(f["duplicates"] for f in faults)}


def render_table(report: dict[str, Any]) -> str:
    sinks = list(report["delivered"])
    head = ["fault", "polled", *(f"{s}" for s in sinks), "lost", "dup", "recovery", "latency"]
    rows = [head]
    for fault in report["faults"]:
        recovery = "-" if fault["recovery_s"] is None else f"{fault['recovery_s']:.1f}s"
        rows.append([fault["name"], str(fault["polled"]),
                     *(str(fault["delivered"].get(s, 0)) for s in sinks), str(fault["lost"]),
                     str(fault["duplicates"]), recovery, f"{fault['worst_latency_s']:.1f}s"])
    rows.append(["total", str(report["polled"]), *(str(report["delivered"][s]) for s in sinks),
                 str(report["lost"]), str(report["duplicates"]), "", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    notes = [f"  {f['name']}: {f['note']}" for f in report["faults"] if f["note"]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], *notes])

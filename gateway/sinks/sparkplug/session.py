"""Sparkplug B session state (pure but for the bdSeq file): bdSeq, seq, aliases, and what each
device's readings turn into (DBIRTH, DDATA, DDEATH)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.models import Quality, Reading
from gateway.sinks.sparkplug.payload import epoch_ms

log = logging.getLogger(__name__)

SEQ_MODULUS = 256
"""seq and bdSeq both count 0..255 and wrap."""


class BdSeqStore:
    """The bdSeq of the last MQTT CONNECT, in a small file that survives restarts.

    Each CONNECT takes the next number and writes it before the CONNECT is sent (so that a
    crash right after cannot reuse it): the will's bdSeq, and that of the NBIRTH that follows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self) -> int | None:
        """The stored bdSeq, or None when there is none (or it is unreadable: logged)."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("sparkplug: cannot read the bdSeq file %s (%s); starting at 0",
                        self.path, exc)
            return None
        if not text.isdigit() or int(text) >= SEQ_MODULUS:
            log.warning("sparkplug: the bdSeq file %s holds %r, not 0..255; starting at 0",
                        self.path, text[:20])
            return None
        return int(text)

    def next(self) -> int:
        """The bdSeq of a new connection, stored before it is used."""
        last = self.last()
        bdseq = 0 if last is None else (last + 1) % SEQ_MODULUS
        self._write(bdseq)
        return bdseq

    def _write(self, bdseq: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as file:
                file.write(f"{bdseq}\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop the session: the host copes
            log.warning("sparkplug: cannot write the bdSeq file %s (%s)", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(self.path.with_name(self.path.name + ".tmp"))


class SequenceCounter:
    """`seq` of the node's messages: 0 in every NBIRTH, +1 per message after, wrapping."""

    def __init__(self) -> None:
        self._next = 0

    def birth(self) -> int:
        self._next = 1
        return 0

    def take(self) -> int:
        seq = self._next
        self._next = (seq + 1) % SEQ_MODULUS
        return seq


class AliasTable:
    """One alias per (device, tag), stable for the sink's life and unique across the node."""

    def __init__(self, first: int = 1) -> None:
        self._next = first
        self._aliases: dict[tuple[str, str], int] = {}
        self._by_alias: dict[int, tuple[str, str]] = {}

    def alias(self, device: str, tag: str) -> int:
        key = (device, tag)
        alias = self._aliases.get(key)
        if alias is None:
            alias = self._aliases[key] = self._next
            self._by_alias[alias] = key
            self._next += 1
        return alias

    def key_of(self, alias: int) -> tuple[str, str] | None:
        """The (device, tag) of an alias given out, for a DCMD by alias."""
        return self._by_alias.get(alias)


# -- what readings become ----------------------------------------------------------------------

@dataclass(frozen=True)
class Birth:
    """A DBIRTH: every metric of the device with its newest reading."""

    device: str
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class Data:
    """A DDATA: `readings[i]` is historical when `historical[i]`."""

    device: str
    readings: tuple[Reading, ...]
    historical: tuple[bool, ...]


@dataclass(frozen=True)
class Death:
    """A DDEATH: the device stopped answering."""

    device: str
    reading: Reading


Step = Birth | Data | Death


@dataclass
class DeviceState:
    newest: dict[str, Reading] = field(default_factory=dict)
    born_tags: frozenset[str] | None = None
    """The tags of this session's DBIRTH; None: not born in this session."""
    down: bool = False
    behind: set[str] = field(default_factory=set)
    """Tags whose newest value went out only as historical, so the host's current value of
    them is older: the first live DDATA carries them too."""


def is_unreachable(cycle: Sequence[Reading], known_tags: Collection[str]) -> bool:
    """A cycle in which every tag of the device is bad for one reason: how the runtime
    reports a device that stopped answering (a single bad tag is just a bad value)."""
    first = cycle[0]
    if any(r.quality is not Quality.BAD or r.error != first.error for r in cycle):
        return False
    tags = {r.tag for r in cycle}
    return all(tag in tags for tag in known_tags)


def _historical(cycle: Sequence[Reading], live_since_ms: int) -> tuple[bool, ...]:
    """Which readings are older than the session. The readings of one poll share their
    timestamp, so each distinct one is converted once."""
    stamps = {r.source_ts for r in cycle}
    if all(epoch_ms(ts) >= live_since_ms for ts in stamps):
        return (False,) * len(cycle)
    return tuple(epoch_ms(r.source_ts) < live_since_ms for r in cycle)


class NodeState:
    """The devices as the current session has published them."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}

    def births(self) -> list[Birth]:
        """A new session (NBIRTH): a DBIRTH of every device that has answered before and is
        not down; the others are born at their next readings."""
        births = []
        for name, device in self.devices.items():
            device.born_tags = None
            device.behind.clear()
            if device.newest and not device.down:
                births.append(self._birth(name, device))
        return births

    def apply(self, cycle: Sequence[Reading], known_tags: Collection[str],
              live_since_ms: int) -> list[Step]:
        """What one device cycle (one reading per tag at most) becomes. `known_tags`: every
        tag of the device the config knows; readings older than `live_since_ms` (the session's
        start) are historical."""
        first = cycle[0]
        name = first.device
        device = self.devices.get(name) or self.devices.setdefault(name, DeviceState())
        # Every reading bad is the cheap half of is_unreachable: try it on the first one only.
        if first.quality is Quality.BAD and is_unreachable(
                cycle, {*known_tags, *device.newest}):
            return self._went_down(name, device, cycle)
        device.down = False
        newest = device.newest
        newest.update([(r.tag, r) for r in cycle])
        # `newest` only grows and `born_tags` is what it held at the birth, so a tag born
        # since shows as a longer `newest`.
        if device.born_tags is None or len(newest) != len(device.born_tags):
            return [self._birth(name, device)]
        historical = _historical(cycle, live_since_ms)
        if all(historical):
            device.behind.update(r.tag for r in cycle)
            return [Data(name, tuple(cycle), historical)]
        tags = {r.tag for r in cycle}
        catch_up = tuple(device.newest[t] for t in sorted(device.behind) if t not in tags)
        device.behind.clear()
        return [Data(name, (*cycle, *catch_up), historical + (False,) * len(catch_up))]

    def _went_down(self, name: str, device: DeviceState, cycle: Sequence[Reading]
                   ) -> list[Step]:
        for reading in cycle:
            device.newest[reading.tag] = reading
        was_born = device.born_tags is not None and not device.down
        device.down = True
        device.born_tags = None
        device.behind.clear()
        return [Death(name, cycle[0])] if was_born else []

    def _birth(self, name: str, device: DeviceState) -> Birth:
        device.born_tags = frozenset(device.newest)
        device.behind.clear()
        return Birth(name, tuple(device.newest.values()))

    def forget(self, keep: Collection[str]) -> None:
        """Devices removed by a reload are no longer born."""
        for name in [n for n in self.devices if n not in keep]:
            del self.devices[name]

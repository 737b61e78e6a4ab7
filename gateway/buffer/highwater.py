"""The high-water mark: a small file beside the buffer (`buffer.db.hwm`), outside SQLite's
write-ahead log, that says which readings had been committed.

After each commit the buffer writes the highest reading id it committed and the lowest id every
sink had acknowledged. At the next start, readings between the two that the database no longer
holds were lost with its write-ahead log (deleted, or damaged so that SQLite ignores its end):
the buffer counts them instead of losing them without a word.

One `pwrite` of 28 bytes per commit, to a file kept open, and none when nothing changed: no
fsync (a power cut may leave the mark behind the database, which can only under-count, never
invent a loss).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MAGIC = b"GWHWM\x00\x00\x01"
_LAYOUT = struct.Struct("<8sQQ")
_CHECK = struct.Struct("<I")
SUFFIX = ".hwm"


@dataclass(frozen=True)
class Mark:
    committed: int  # the highest reading id committed to the database
    acked: int  # every sink had acknowledged the readings up to this id


def decode(data: bytes) -> Mark | None:
    """The mark in `data`, or None when it is not one (missing, short, or damaged)."""
    if len(data) < _LAYOUT.size + _CHECK.size:
        return None
    body = data[:_LAYOUT.size]
    (check,) = _CHECK.unpack_from(data, _LAYOUT.size)
    magic, committed, acked = _LAYOUT.unpack(body)
    if magic != _MAGIC or zlib.crc32(body) != check:
        return None
    return Mark(committed, acked)


def encode(mark: Mark) -> bytes:
    body = _LAYOUT.pack(_MAGIC, mark.committed, mark.acked)
    return body + _CHECK.pack(zlib.crc32(body))


def mark_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + SUFFIX)


def read_mark(db_path: Path) -> Mark | None:
    """The mark beside the buffer file at `db_path`, if there is a sound one."""
    try:
        return decode(mark_path(db_path).read_bytes())
    except OSError:
        return None


class HighWaterFile:
    """The sidecar of one buffer file. Failures to write it are logged once and ignored: it
    only makes a loss visible, it never holds data."""

    def __init__(self, db_path: Path) -> None:
        self.path = mark_path(db_path)
        self._written = read_mark(db_path)
        self._fd: int | None = None
        self._failed = False
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._fail(exc)

    def write(self, committed: int, acked: int) -> None:
        mark = Mark(committed, acked)
        if mark == self._written or self._fd is None:
            return
        try:
            os.pwrite(self._fd, encode(mark), 0)
        except OSError as exc:
            self._fail(exc)
            return
        self._written = mark
        self._failed = False

    def _fail(self, exc: OSError) -> None:
        if not self._failed:
            log.warning("buffer: cannot write the high-water mark %s (%s): a damaged "
                        "write-ahead log would not be detected", self.path, exc.strerror or exc)
        self._failed = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

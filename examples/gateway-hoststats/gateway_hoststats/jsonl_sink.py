"""An example sink plugin: every reading as one JSON line appended to a file (an archive on the
edge box, or a hand-off to another program). Acknowledged once the lines are flushed to the
file (and fsynced when `fsync: true`), so the runtime then moves the sink's cursor."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from gateway.sdk import (
    Delivery,
    DeviceContext,
    Duration,
    Reading,
    Sink,
    SinkEnvironment,
    SinkError,
    SinkSettings,
)


class JsonLinesSettings(SinkSettings):
    type: Literal["jsonl"] = Field("jsonl", description="jsonl")
    path: str = Field(description="File the JSON lines are appended to")
    fsync: bool = Field(False, description="fsync after every batch (survives a power cut)")
    batch_size: int = Field(1000, gt=0, description="Readings per write")
    flush_interval: Duration = Field(1.0, ge=0, description="Longest wait for a fuller batch")


class JsonLinesSink(Sink):
    name = "jsonl"
    settings_model = JsonLinesSettings

    @classmethod
    def from_settings(cls, name: str, settings: SinkSettings,
                      environment: SinkEnvironment) -> JsonLinesSink:
        assert isinstance(settings, JsonLinesSettings)
        return cls(settings, environment.contexts, name)

    def __init__(self, settings: JsonLinesSettings, contexts: Mapping[str, DeviceContext],
                 name: str | None = None) -> None:
        super().__init__(contexts, name)
        self.settings = settings
        self.delivery = Delivery(batch_size=settings.batch_size,
                                 flush_interval=settings.flush_interval)
        self._file: IO[str] | None = None
        self._error: OSError | None = None

    @property
    def connected(self) -> bool:
        return self._file is not None

    async def start(self) -> None:
        try:
            self._file = await asyncio.to_thread(_open_for_append, Path(self.settings.path))
        except OSError as exc:  # retried at the next send; the readings wait in the buffer
            self._file = None
            self._error = exc

    async def send(self, readings: Sequence[Reading]) -> None:
        if self._file is None:
            await self.start()
        if self._file is None:
            raise SinkError(f"cannot open {self.settings.path}: {self._error}", self.name)
        lines = "".join(json.dumps(self._record(r)) + "\n" for r in readings)
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            raise SinkError(f"cannot write {self.settings.path}: {exc}", self.name) from exc

    def _write(self, lines: str) -> None:
        assert self._file is not None
        self._file.write(lines)
        self._file.flush()
        if self.settings.fsync:
            os.fsync(self._file.fileno())

    def _record(self, reading: Reading) -> dict[str, object]:
        context = self.contexts.get(reading.device)
        return {"site": context.site if context else "", "device": reading.device,
                "tag": reading.tag, "value": reading.value, "quality": reading.quality.value,
                "ts": reading.source_ts.isoformat(), "error": reading.error}

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_for_append(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")

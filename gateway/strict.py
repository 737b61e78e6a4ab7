"""The one strict pydantic base of every config model: unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere in the config (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")

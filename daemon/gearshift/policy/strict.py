"""The base of every block of the files SREs edit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every file block: unknown keys are errors, values are never silently coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

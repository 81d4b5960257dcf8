"""The base of every block of the files SREs edit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo


class Strict(BaseModel):
    """Every file block: unknown keys are errors, values are never silently coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def max_not_below_min(value: int, info: ValidationInfo) -> int:
    """A ``max`` field's check against the block's ``min`` (validated before it)."""
    low = info.data.get("min")
    if low is not None and value < low:
        raise ValueError(f"max ({value}) must not be below min ({low})")
    return value

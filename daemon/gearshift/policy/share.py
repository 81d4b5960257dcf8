"""A number of nodes, or a share of the pool's: ``2``, ``10%``.

A drain budget of two nodes suits a pool of ten and holds a pool of two hundred to a
crawl (a scale-in of a hundred surplus nodes, each drain minutes long, takes hours), so
``scale_in.max_concurrent_drains`` also takes a share of the pool's nodes, as Kubernetes
disruption budgets do. ``NodeCount`` is the pydantic type: a whole number of at least 1,
or a percentage above 0 and at most 100; a share comes back as ``ShareOfPool`` and is
turned into nodes by the planner (``of``) against the pool's size at that moment.

Unset, the budget is the larger of two nodes and 10 % of the pool (``nodes_of(None)``):
two for a pool of up to twenty nodes, as before shares existed, and a tenth of a larger
one, as Karpenter's default disruption budget (``nodes: 10%``) is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

SHARE_PATTERN = r"^\d{1,3}(\.\d+)?%$"
_SHARE = re.compile(SHARE_PATTERN)
_FORMS = "use a whole number of nodes (at least 1) or a share of the pool's, e.g. 10%"


@dataclass(frozen=True)
class ShareOfPool:
    """``percent`` of a pool's nodes, rounded up, never less than one node."""

    percent: float

    def of(self, nodes: int) -> int:
        return max(1, math.ceil(round(nodes * self.percent / 100, 9)))

    def __str__(self) -> str:
        return f"{self.percent:g}%"


def to_node_count(value: Any) -> int | ShareOfPool:
    """A ``NodeCount`` value; ValueError names the accepted forms."""
    if isinstance(value, ShareOfPool):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"invalid node count {value!r}: {_FORMS}")
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not _SHARE.fullmatch(text):
        raise ValueError(f"invalid node count {value!r}: {_FORMS}")
    percent = float(text[:-1])
    if not 0 < percent <= 100:
        raise ValueError(f"invalid share {value!r}: above 0% and at most 100%")
    return ShareOfPool(percent)


NodeCount = Annotated[
    int | ShareOfPool,
    PlainValidator(to_node_count),
    PlainSerializer(lambda value: str(value) if isinstance(value, ShareOfPool) else value),
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": SHARE_PATTERN, "examples": ["10%", "25%"]}]}),
]


DEFAULT_AT_LEAST = 2
DEFAULT_SHARE = ShareOfPool(10.0)


def nodes_of(count: int | ShareOfPool | None, *, pool_size: int) -> int:
    """``count`` in nodes for a pool of ``pool_size`` nodes; None: the default budget."""
    if count is None:
        return max(DEFAULT_AT_LEAST, DEFAULT_SHARE.of(pool_size))
    return count.of(pool_size) if isinstance(count, ShareOfPool) else count

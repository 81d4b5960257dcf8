"""A pool's extra signals (PromQL queries) read against its policy: which ask for more
nodes, which forbid scale-in (a stale or failed one too, when ``on_error: hold``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.model import FleetSnapshot
from gearshift.policy.schema import PoolPolicy


@dataclass
class Signals:
    """What a pool's extra signals say right now."""

    up: list[str] = field(default_factory=list)  # signals asking for more nodes
    block_down: list[str] = field(default_factory=list)  # signals forbidding scale-in


def read_signals(policy: PoolPolicy, snapshot: FleetSnapshot, now: float) -> Signals:
    result = Signals()
    if not policy.signals:
        return result
    latest = {s.name: s for s in snapshot.signals if s.pool == policy.name}
    for spec in policy.signals:
        signal = latest.get(spec.name)
        fresh = (signal is not None and signal.value is not None and signal.observed_at is not None
                 and now - signal.observed_at <= spec.stale_after)
        if not fresh or signal is None or signal.value is None:
            if spec.on_error == "hold":
                result.block_down.append(f"signal {spec.name} unavailable (on_error: hold)")
            continue
        value = signal.value
        if spec.scale_up_above is not None and value > spec.scale_up_above:
            result.up.append(f"signal {spec.name} {value:g} > {spec.scale_up_above:g}")
        if spec.scale_down_below is not None and value >= spec.scale_down_below:
            result.block_down.append(f"signal {spec.name} {value:g} >= {spec.scale_down_below:g}")
    return result

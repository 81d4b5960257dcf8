"""Disruption budgets: how many nodes may be draining at once, per pool and per provider.

A drain takes a node out of service for as long as its gears take to move, whatever the
reason (scale-in, preemption, burst-and-return), so every drain counts against two
budgets: its pool's (``disruption_budget.max_draining``, by default the pool's
``scale_in.max_concurrent_drains``, a number or a share of the pool's nodes) and its
provider's (``disruption_budget.max_draining``
on the provider; no limit by default). Drains already in flight count, and so does every
drain planned earlier in the same evaluation, whichever pool planned it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from gearshift.model import FleetSnapshot, Node
from gearshift.policy.schema import PoolPolicy, ProvidersFile
from gearshift.policy.share import nodes_of


class DrainBudget:
    """Drains in flight and planned, per pool and per provider, against their budgets."""

    def __init__(self, snapshot: FleetSnapshot, nodes_by_id: Mapping[str, Node],
                 providers: ProvidersFile, *, sizes: Mapping[str, int]) -> None:
        self.providers = providers
        self.sizes = sizes  # each pool's nodes, for a budget given as a share of them
        self.by_pool: Counter[str] = Counter(d.pool for d in snapshot.drains)
        self.by_provider: Counter[str] = Counter()
        for drain in snapshot.drains:
            node = nodes_by_id.get(drain.identity)
            if node is not None and node.machine is not None:
                self.by_provider[node.machine.provider] += 1

    def end(self, pool: str, provider: str | None) -> None:
        """A drain finishes (retired or reactivated) in this plan: its slot frees."""
        self.by_pool[pool] = max(0, self.by_pool[pool] - 1)
        if provider is not None:
            self.by_provider[provider] = max(0, self.by_provider[provider] - 1)

    def pool_left(self, policy: PoolPolicy) -> int:
        limit = policy.disruption_budget.max_draining
        if limit is None:
            limit = nodes_of(policy.scale_in.max_concurrent_drains,
                             pool_size=self.sizes.get(policy.name, 0))
        return max(0, limit - self.by_pool[policy.name])

    def provider_left(self, provider: str | None) -> int | None:
        """Drains the provider may still take; None when it has no limit."""
        spec = self.providers.provider(provider) if provider is not None else None
        if spec is None or spec.disruption_budget.max_draining is None:
            return None
        return max(0, spec.disruption_budget.max_draining - self.by_provider[spec.name])

    def allows(self, policy: PoolPolicy, provider: str | None) -> str | None:
        """None when one more drain fits both budgets, else why not."""
        if self.pool_left(policy) <= 0:
            return f"pool {policy.name} drain budget used ({self.by_pool[policy.name]} draining)"
        left = self.provider_left(provider)
        if left is not None and left <= 0:
            return f"provider {provider} drain budget used ({self.by_provider[provider or '']} draining)"
        return None

    def take(self, pool: str, provider: str | None) -> None:
        self.by_pool[pool] += 1
        if provider is not None:
            self.by_provider[provider] += 1

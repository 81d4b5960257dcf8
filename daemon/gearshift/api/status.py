"""``/v1/status``: the reconciler's last reading of the fleet, as the typed status model.

The server (``api/server.py``) handles HTTP: routes, auth, bounds, the shared dry run. This
module only reads what the reconciler last saw (its pool evaluations, snapshot, providers,
paused pools, policy problems) into ``StatusModel``: no request, no I/O, so the status the
page, ``gearshift status`` and the API contract tests read is built in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

from gearshift.api.models_status import DecisionModel, StatusExtrasModel, StatusModel
from gearshift.api_models import (
    BandModel,
    NodeCountsModel,
    PoolForecastModel,
    PoolStatusModel,
    ProviderStatusModel,
    iso_time,
)
from gearshift.reconcile.reconciler import Reconciler


def _iso(at: float | None) -> str | None:
    return None if at is None else iso_time(at)


def status_model(reconciler: Reconciler, *, leader: bool, decisions: Sequence[DecisionModel],
                 extras: StatusExtrasModel | None) -> StatusModel:
    """The status now (``decisions``: the latest actions, newest first; ``extras``: what
    the daemon adds, leadership, operations in flight, recoveries)."""
    evaluations = reconciler.last_pools
    policies = reconciler.policies.current
    snapshot = reconciler.last_snapshot
    parked = Counter(p.pool for p in (snapshot.parked if snapshot is not None else ())
                     if p.phase != "resuming")
    pools: dict[str, PoolStatusModel] = {}
    for policy in policies.pools:
        e = evaluations.get(policy.name)
        pools[policy.name] = PoolStatusModel(
            nodes=NodeCountsModel(active=e.active if e else 0,
                                  booting=e.booting if e else 0,
                                  draining=e.draining if e else 0,
                                  unknown=e.unknown if e else 0,
                                  parked=parked[policy.name]),
            active_density=e.active_density if e else None,
            desired_nodes=e.desired_nodes if e else policy.size.min,
            degraded=e.degraded if e else True,
            paused=policy.name in reconciler.paused,
            min=policy.size.min, max=policy.size.max,
            band=BandModel(scale_up_above=policy.density.scale_up_above,
                           target=policy.density.target,
                           scale_down_below=policy.density.scale_down_below),
            summary=e.summary if e else "not evaluated yet",
            forecast=None if policy.predictive.mode == "off" else PoolForecastModel(
                mode=policy.predictive.mode, quantile=policy.predictive.quantile,
                at=_iso(e.forecast_at) if e else None,
                gears=e.forecast_gears if e else None,
                extra_nodes=e.forecast_extra_nodes if e else 0),
        )
    by_provider: dict[str, int] = {}
    if snapshot is not None:
        for node in snapshot.nodes:
            if node.machine is not None:
                by_provider[node.machine.provider] = by_provider.get(node.machine.provider,
                                                                     0) + 1
    providers = {name: ProviderStatusModel.model_validate(
                     {**asdict(p.status()), "nodes": by_provider.get(name, 0)}
                 ) for name, p in reconciler.providers.items()}
    return StatusModel(
        pools=pools,
        leader=leader,
        facts_fresh=reconciler.fleet.source_up,
        last_reconcile=_iso(reconciler.last_success),
        providers=providers,
        policy_errors=list(reconciler.policies.problems),
        decisions=list(decisions),
        **(dict(extras) if extras is not None else {}),
    )

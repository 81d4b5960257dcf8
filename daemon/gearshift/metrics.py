"""Every Prometheus metric gearshift exports, in one registry per daemon.

A registry per instance (not the global one) lets tests and ``simulate`` build as many
daemons as they like. Names are prefixed ``gearshift_`` and pass ``promtool check metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gearshift.model import FleetSnapshot
from gearshift.plan import PoolEvaluation

log = structlog.get_logger(component="gearshift.metrics")

NODE_STATES = ("active", "booting", "draining", "unknown")


class _PoolGauges(NamedTuple):
    """One pool's labelled children of the per-pool gauges."""

    nodes: tuple[Gauge, ...]  # by NODE_STATES
    density: Gauge
    desired: Gauge
    degraded: Gauge
    paused: Gauge
    forecast_gears: Gauge
    forecast_extra: Gauge
    limits: tuple[Gauge, Gauge]  # min, max
    band: tuple[Gauge, ...]  # scale_up_above, target, scale_down_below


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._pools: dict[str, _PoolGauges] = {}
        self._provider_children: dict[tuple[str, str], Gauge] = {}
        self._overdue_children: dict[str, Gauge] = {}
        # Set gauges from state kept elsewhere, right before each scrape (the reconciler's
        # last pools and fleet).
        self.on_scrape: list[Callable[[], None]] = []
        r = self.registry
        self.pool_nodes = Gauge("gearshift_pool_nodes", "Nodes in a pool by state.",
                                ["pool", "state"], registry=r)
        self.pool_active_density = Gauge(
            "gearshift_pool_active_density",
            "Active density now: active gears / max_active_gears over the pool's active "
            "nodes, booting nodes not counted (the planner acts on the projected density, "
            "with booting nodes: see /v1/plan); NaN when unknown.",
            ["pool"], registry=r)
        self.pool_desired_nodes = Gauge("gearshift_pool_desired_nodes",
                                        "Nodes the policy wants for the pool now.", ["pool"],
                                        registry=r)
        self.pool_size_limits = Gauge("gearshift_pool_size_limit_nodes",
                                      "The pool's configured min and max nodes.",
                                      ["pool", "limit"], registry=r)
        self.pool_density_band = Gauge("gearshift_pool_density_threshold",
                                       "The pool's density band (scale_up_above, target, "
                                       "scale_down_below).", ["pool", "threshold"], registry=r)
        self.pool_degraded = Gauge("gearshift_pool_degraded",
                                   "1 when some of the pool's facts cannot be trusted.",
                                   ["pool"], registry=r)
        self.pool_paused = Gauge("gearshift_pool_paused", "1 when the pool is paused.", ["pool"],
                                 registry=r)
        self.forecast_gears = Gauge("gearshift_forecast_gears",
                                    "Predictive scaling: the upper demand forecast for now + "
                                    "time-to-ready (NaN: off or no forecast).", ["pool"],
                                    registry=r)
        self.forecast_extra_nodes = Gauge("gearshift_forecast_extra_nodes",
                                          "Nodes the forecast orders now (mode on) or would "
                                          "order (forecast_only).", ["pool"], registry=r)
        self.actions = Counter("gearshift_actions", "Actions carried out, by kind and provider.",
                               ["kind", "pool", "provider"], registry=r)
        self.action_failures = Counter("gearshift_action_failures",
                                       "Actions that failed, by kind and error class.",
                                       ["kind", "pool", "error"], registry=r)
        self.reconcile_seconds = Histogram(
            "gearshift_reconcile_duration_seconds", "Time one reconcile took.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.reconciles = Counter("gearshift_reconciles", "Reconciles run, by outcome.",
                                  ["outcome"], registry=r)
        self.last_success = Gauge("gearshift_last_successful_reconcile_timestamp_seconds",
                                  "When the last reconcile succeeded (Unix time).", registry=r)
        self.bad_messages = Counter("gearshift_bad_messages", "Messages rejected, by reason.",
                                    ["reason"], registry=r)
        self.facts_received = Counter("gearshift_facts_received", "Node facts accepted.",
                                      registry=r)
        self.unsigned_facts = Counter("gearshift_unsigned_facts",
                                      "Unsigned node facts accepted (trust.facts: "
                                      "accept_unsigned).", registry=r)
        self.witness_disagreements = Counter(
            "gearshift_witness_disagreements",
            "Retires refused because the platform or provider contradicted the node's facts.",
            ["pool", "witness"], registry=r)
        self.nodes_forgotten = Counter("gearshift_nodes_forgotten",
                                       "Nodes not ours forgotten after trust.forget_after "
                                       "of silence.", registry=r)
        self.fleet_nodes = Gauge("gearshift_fleet_nodes",
                                 "Nodes whose facts gearshift holds (bounded by "
                                 "trust.max_nodes).", registry=r)
        self.untrusted_nodes = Gauge("gearshift_untrusted_nodes",
                                     "Nodes that count for no pool now, by why.", ["why"],
                                     registry=r)
        self.fact_source_up = Gauge("gearshift_fact_source_up",
                                    "1 when the fact source is connected and caught up.",
                                    registry=r)
        self.provider_calls = Counter("gearshift_provider_calls", "Provider calls by outcome.",
                                      ["provider", "op", "outcome"], registry=r)
        self.provider_call_seconds = Histogram(
            "gearshift_provider_call_seconds", "Provider call latency.", ["provider", "op"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.provider_available = Gauge("gearshift_provider_available",
                                        "1 when placement may use the provider (breaker closed, "
                                        "not backed off).", ["provider"], registry=r)
        self.provider_boot_seconds = Gauge("gearshift_provider_time_to_ready_seconds",
                                           "Measured time from create to first fresh facts.",
                                           ["provider"], registry=r)
        self.operations_in_flight = Gauge("gearshift_operations_in_flight",
                                          "Journaled operations not yet done, by kind.", ["kind"],
                                          registry=r)
        self.oldest_operation_age = Gauge("gearshift_oldest_operation_age_seconds",
                                          "Age of the oldest operation in flight.", registry=r)
        self.policy_reloads = Counter("gearshift_policy_reloads", "Policy reloads by outcome.",
                                      ["outcome"], registry=r)
        # Operator surface (deploy/prometheus/rules.yml and deploy/grafana/gearshift.json
        # read these; tests/test_dashboard.py checks every metric they query exists).
        self.leader = Gauge("gearshift_leader",
                            "1 when this instance is the leader and may act.", registry=r)
        self.policy_errors = Gauge("gearshift_policy_errors",
                                   "Problems in the policy files on disk that the last reload "
                                   "refused (the last good set stays in force).", registry=r)
        self.drains_overdue = Gauge("gearshift_drains_overdue",
                                    "Drains in flight past their drain_timeout deadline.",
                                    ["pool"], registry=r)
        self.provider_nodes = Gauge("gearshift_provider_nodes",
                                    "Nodes gearshift owns by provider and state (unowned nodes "
                                    "under provider=\"unmanaged\").", ["provider", "state"],
                                    registry=r)
        self.start_time = Gauge("gearshift_start_time_seconds",
                                "When the daemon started (Unix time).", registry=r)
        self.loop_heartbeat = Gauge("gearshift_loop_heartbeat_timestamp_seconds",
                                    "When the reconcile loop last proved it is alive (Unix "
                                    "time); what /healthz and the systemd watchdog go by.",
                                    registry=r)
        self.fact_source_reconnects = Counter(
            "gearshift_fact_source_reconnects", "Reconnects of the fact source after a loss.",
            registry=r)
        self.mcollective_messages = Counter(
            "gearshift_mcollective_messages", "STOMP messages of the MCollective fact source, "
            "by direction (a directed request counts once per node).", ["direction"],
            registry=r)
        self.mcollective_nodes = Gauge(
            "gearshift_mcollective_nodes_answered",
            "Nodes that answered the last MCollective facts poll.", registry=r)
        self.fact_source_waiting = Gauge(
            "gearshift_fact_source_waiting_nodes",
            "Nodes not heard from since the fact source came back (scale-in waits for them).",
            registry=r)
        self.signal_queries = Counter("gearshift_signal_queries",
                                      "Prometheus signal queries by pool, signal and outcome.",
                                      ["pool", "signal", "outcome"], registry=r)
        self.signal_value = Gauge("gearshift_signal_value",
                                  "Latest value of a pool's Prometheus signal (NaN when "
                                  "unavailable).", ["pool", "signal"], registry=r)
        # -- the journal, recovery and leadership -----------------------------------------
        self.operations_by_phase = Gauge("gearshift_operations_in_flight_by_phase",
                                         "Journaled operations not yet done, by kind and phase.",
                                         ["kind", "phase"], registry=r)
        self.oldest_operation_age_by_kind = Gauge(
            "gearshift_oldest_operation_age_by_kind_seconds",
            "Age of the oldest operation in flight, by kind (0 when none).", ["kind"],
            registry=r)
        self.recoveries = Counter("gearshift_recoveries",
                                  "Recoveries performed (journal against provider listings "
                                  "and facts), by reason (start, sweep) and outcome.",
                                  ["reason", "outcome"], registry=r)
        self.recovery_actions = Counter("gearshift_recovery_actions",
                                        "What recoveries did, by action.", ["action"],
                                        registry=r)
        self.leader_changes = Counter("gearshift_leader_changes",
                                      "Times this instance became leader or stepped down.",
                                      ["to"], registry=r)
        self.journal_fenced_writes = Counter(
            "gearshift_journal_fenced_writes",
            "Journal writes refused because another instance holds the leader lease now.",
            registry=r)
        self.journal_pruned = Counter(
            "gearshift_journal_pruned",
            "Finished operations and recovery records deleted from the journal once older "
            "than journal.keep_finished, by what (operations, recoveries).", ["what"],
            registry=r)
        # the HTTP API's own protection (api/guard.py, api/server.py)
        self.http_connections_closed = Counter(
            "gearshift_http_connections_closed",
            "HTTP connections the daemon closed to protect itself, by reason (over_limit: "
            "http.max_connections reached, the oldest closed; no_request: no complete request "
            "within http.read_timeout).", ["reason"], registry=r)
        self.http_accept_errors = Counter(
            "gearshift_http_accept_errors",
            "HTTP connections the kernel could not hand over (out of file descriptors or "
            "memory).", registry=r)
        self.plan_dry_runs = Counter(
            "gearshift_plan_dry_runs",
            "Plans computed to answer /v1/plan (the others were answered from a recent one).",
            registry=r)

    def _pool(self, name: str) -> _PoolGauges:
        """The pool's labelled gauges, looked up once (``labels()`` takes a lock and
        checks its arguments: 15 of them per pool on every refresh add up at 100 pools)."""
        gauges = self._pools.get(name)
        if gauges is None:
            gauges = self._pools[name] = _PoolGauges(
                nodes=tuple(self.pool_nodes.labels(name, s) for s in NODE_STATES),
                density=self.pool_active_density.labels(name),
                desired=self.pool_desired_nodes.labels(name),
                degraded=self.pool_degraded.labels(name),
                paused=self.pool_paused.labels(name),
                forecast_gears=self.forecast_gears.labels(name),
                forecast_extra=self.forecast_extra_nodes.labels(name),
                limits=(self.pool_size_limits.labels(name, "min"),
                        self.pool_size_limits.labels(name, "max")),
                band=tuple(self.pool_density_band.labels(name, t)
                           for t in ("scale_up_above", "target", "scale_down_below")))
        return gauges

    def record_pools(self, pools: Mapping[str, PoolEvaluation], *,
                     limits: dict[str, tuple[int, int]],
                     bands: dict[str, tuple[float, float, float]]) -> None:
        for name, evaluation in pools.items():
            gauges = self._pool(name)
            self._record_pool(evaluation, gauges)
            for gauge, value in zip(gauges.limits, limits.get(name, (0, 0)), strict=True):
                gauge.set(value)
            for gauge, threshold in zip(gauges.band, bands.get(name, (0.0, 0.0, 0.0)),
                                        strict=True):
                gauge.set(threshold)

    @staticmethod
    def _record_pool(e: PoolEvaluation, gauges: _PoolGauges) -> None:
        for gauge, count in zip(gauges.nodes, (e.active, e.booting, e.draining, e.unknown),
                                strict=True):
            gauge.set(count)
        density = e.active_density
        gauges.density.set(float("nan") if density is None else density)
        gauges.desired.set(e.desired_nodes)
        gauges.degraded.set(1 if e.degraded else 0)
        gauges.paused.set(1 if e.paused else 0)
        gauges.forecast_gears.set(float("nan") if e.forecast_gears is None
                                  else e.forecast_gears)
        gauges.forecast_extra.set(e.forecast_extra_nodes)

    def record_fleet(self, snapshot: FleetSnapshot, *, pools: Iterable[str],
                     providers: Iterable[str]) -> None:
        """Per-provider node counts and overdue drains, from one snapshot."""
        counts: dict[tuple[str, str], int] = {
            (provider, state): 0 for provider in (*providers, "unmanaged") for state in NODE_STATES}
        counts_get = counts.get
        for node in snapshot.nodes:
            machine = node.machine
            # (``_value_``: a plain attribute; ``.value`` is a descriptor several times dearer)
            key = (machine.provider if machine is not None else "unmanaged", node.state._value_)
            counts[key] = counts_get(key, 0) + 1
        for pending in snapshot.pending:
            key = (pending.provider, "booting")
            counts[key] = counts_get(key, 0) + 1
        children = self._provider_children
        for key, count in counts.items():
            child = children.get(key)
            if child is None:
                child = children[key] = self.provider_nodes.labels(*key)
            child.set(count)
        overdue = dict.fromkeys(pools, 0)
        for drain in snapshot.drains:
            if snapshot.taken_at >= drain.deadline:
                overdue[drain.pool] = overdue.get(drain.pool, 0) + 1
        gauges = self._overdue_children
        for pool, count in overdue.items():  # (a drain may name a pool no longer in policy)
            gauge = gauges.get(pool)
            if gauge is None:
                gauge = gauges[pool] = self.drains_overdue.labels(pool)
            gauge.set(count)

    def exposition(self) -> bytes:
        """The text a scrape gets, the ``on_scrape`` gauges brought up to date first."""
        for refresh in self.on_scrape:
            try:
                refresh()
            except Exception:  # a bug there must not take the other metrics down
                log.exception("refreshing metrics for a scrape failed")
        return generate_latest(self.registry)

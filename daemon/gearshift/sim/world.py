"""A simulated PaaS: nodes, gears placed the way the OpenShift v2 broker places them, drains.

Used by ``simulate``, ``demo`` and the tests, always through the same interfaces the real
world is seen through (node facts, ``Provider``, ``Platform``). Time is whatever the
caller passes to ``advance``: a simulation runs a week in seconds, the demo in real time.

Gears, per pool (from ``docs: openshift-v2.md``):

* demand is a number of *active* gears per pool, set by a trace;
* more demand first wakes idle gears where they sleep (which can push a node past its
  ``max_active_gears``: headroom is there for that), then places new gears one by one on
  the active node with the lowest active density that has room, as the broker does;
  deactivated (draining) nodes get none; what fits nowhere is *unmet*;
* less demand idles gears on nodes in proportion to their active gears;
* a gear move takes ``move_time`` and fails with ``move_failure_rate``; a moved gear keeps
  its state and lands on the emptiest active node with room.

The world also keeps the score: unmet gear-seconds, node-seconds per provider (running and
stopped apart: a stopped machine costs only its disk), and the violations a report lists.

Speed (a simulated week replays tens of thousands of steps): nodes are indexed by pool, a
``version`` counts every change to gears, districts or the node set, and
``next_event`` says when time alone will change something (a node boots, a gear move
ends). Between those, with the same demand, another ``advance`` changes nothing but the
score, so a caller may jump straight to the next event (``runner.py`` does).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter

from gearshift.sim.nodes import Move, SimNode, Violations


class SimWorld:
    """Nodes, gears and the score of one simulated PaaS."""

    def __init__(self, *, seed: int = 0, start: float = 0.0, move_time: float = 20.0,
                 move_failure_rate: float = 0.0, idle_cap_factor: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.move_time = move_time
        self.move_failure_rate = move_failure_rate
        self.idle_cap_factor = idle_cap_factor
        self.nodes: dict[str, SimNode] = {}
        self.demand: dict[str, int] = {}
        self.unmet: dict[str, int] = {}
        self.keys: dict[str, str] = {}  # idempotency key -> identity
        self.creates_by_key: Counter[str] = Counter()
        self.destroyed: list[SimNode] = []
        self.violations = Violations()
        self.unmet_gear_seconds: dict[str, float] = {}
        self.node_seconds: dict[str, float] = {}
        self.stopped_node_seconds: dict[str, float] = {}  # machines powered off, by provider
        self.move_stats = Counter[str]()
        self.version = 0  # bumped by every change to gears, districts or the node set
        self._by_pool: dict[str, dict[str, SimNode]] = {}  # pool -> its nodes, in order
        self._unpublished: list[SimNode] = []  # added, never published (seq 0) yet
        self._booting: list[SimNode] = []  # added with ready_at in the future (pruned lazily)
        self._moving: dict[str, SimNode] = {}  # nodes with gear moves in flight
        # nodes per (provider, powered), for node-seconds
        self._per_provider: Counter[tuple[str, bool]] = Counter()
        # pool -> until when its last rebalance stays a no-op (its next node boots); a
        # change to its demand or nodes drops it (``_moved``).
        self._settled: dict[str, float] = {}

    # -- machines ---------------------------------------------------------------------
    def add_node(self, node: SimNode) -> None:
        self.creates_by_key[node.key] += 1
        old = self.nodes.get(node.identity)
        if self.creates_by_key[node.key] > 1 or old is not None:
            self.violations.duplicate_creates += 1
        self.nodes[node.identity] = node
        self.keys[node.key] = node.identity
        if old is not None and old.pool != node.pool:
            self._reindex(old.pool)
            self._reindex(node.pool)
        else:
            self._by_pool.setdefault(node.pool, {})[node.identity] = node
        self._unpublished.append(node)
        if node.ready_at > self.now:
            self._booting.append(node)
        if old is not None:
            self._per_provider[old.provider, old.powered] -= 1
            self._moving.pop(old.identity, None)
        self._per_provider[node.provider, node.powered] += 1
        if node.moves:
            self._moving[node.identity] = node
        self._moved(node.pool, node.pool if old is None else old.pool)

    def _moved(self, *pools: str) -> None:
        """Gears, districts, nodes or demand of ``pools`` changed: the version moves and
        their rebalance runs again."""
        self.version += 1
        for pool in pools:
            self._settled.pop(pool, None)

    def _reindex(self, pool: str) -> None:
        self._by_pool[pool] = {i: n for i, n in self.nodes.items() if n.pool == pool}

    def destroy(self, identity: str) -> SimNode | None:
        node = self.nodes.pop(identity, None)
        if node is None:
            return None
        if node.active > 0:
            self.violations.retired_with_active_gears += 1
        self._by_pool.get(node.pool, {}).pop(identity, None)
        self._per_provider[node.provider, node.powered] -= 1
        self._moving.pop(identity, None)
        self.destroyed.append(node)
        self._moved(node.pool)
        return node

    def power_off(self, identity: str) -> None:
        """Stop a machine, keeping its disk: its gears go down with it (idle, still on
        it; demand places them elsewhere) until it is powered on again."""
        node = self.nodes[identity]
        if node.powered:
            self._per_provider[node.provider, True] -= 1
            self._per_provider[node.provider, False] += 1
            node.idle, node.active, node.powered = node.idle + node.active, 0, False
            self._moved(node.pool)

    def power_on(self, identity: str, *, ready_at: float) -> None:
        """Start a stopped machine; it publishes facts again from ``ready_at``."""
        node = self.nodes[identity]
        if not node.powered:
            self._per_provider[node.provider, False] -= 1
            self._per_provider[node.provider, True] += 1
            node.powered, node.ready_at, node.dirty = True, ready_at, True
            if ready_at > self.now:
                self._booting.append(node)
            self._moved(node.pool)

    def pool_nodes(self, pool: str) -> list[SimNode]:
        return list(self._by_pool.get(pool, {}).values())

    def set_district_active(self, identity: str, active: bool) -> None:
        node = self.nodes.get(identity)
        if node is not None and node.district_active != active:
            node.district_active = active
            node.dirty = True
            self._moved(node.pool)

    # -- demand -----------------------------------------------------------------------
    def set_demand(self, pool: str, gears: int) -> None:
        if self.demand.get(pool) != max(0, gears):
            self._moved(pool)
        self.demand[pool] = max(0, gears)

    def _rebalance(self, pool: str) -> None:
        """Place or idle the pool's gears to meet its demand on its ready nodes. What it
        does depends only on those nodes' gears, districts and readiness and the demand:
        once it changes nothing it stays a no-op until one of them changes (through this
        class's methods: a field set from outside is not seen until then)."""
        now = self.now
        if now < self._settled.get(pool, -math.inf):
            return
        version = self.version
        ready = [n for n in self._by_pool.get(pool, {}).values()
                 if n.powered and now >= n.ready_at]
        placed = sum(n.active for n in ready)
        want = self.demand.get(pool, 0)
        if want > placed:
            placed += self._wake_idle(ready, want - placed)
        if want > placed:
            placed += self._place(ready, want - placed)
        elif want < placed:
            self._idle(ready, placed - want)
            placed = want
        self.unmet[pool] = max(0, want - placed)
        if self.version == version:
            self._settled[pool] = min((n.ready_at for n in self._booting
                                       if n.pool == pool and n.ready_at > now), default=math.inf)

    def _wake_idle(self, nodes: list[SimNode], wanted: int) -> int:
        """Idle gears wake where they sleep, whatever the node's limit.

        About half of returning demand is old, idled apps waking up; the rest is new.
        """
        sleeping = sum(n.idle for n in nodes)
        if sleeping == 0:
            return 0
        to_wake = min(wanted, sleeping) // 2
        woken = 0
        for node in nodes:
            share = min(node.idle, to_wake * node.idle // sleeping)
            if share:
                node.idle -= share
                node.active += share
                node.dirty = True
                woken += share
        if woken:
            self.version += 1
        return woken

    def _place(self, nodes: list[SimNode], gears: int) -> int:
        heap = [(n.active / n.max_active_gears, i, n) for i, n in enumerate(nodes)
                if n.district_active and n.active < n.max_active_gears]
        heapq.heapify(heap)
        placed = 0
        while placed < gears and heap:
            _, i, node = heapq.heappop(heap)
            room = node.max_active_gears - node.active
            # Fill up to the next node's density in one go (same result as one-by-one).
            next_density = heap[0][0] if heap else 1.0
            take = max(1, min(room, gears - placed,
                              int(next_density * node.max_active_gears) - node.active + 1))
            node.active += take
            node.dirty = True
            placed += take
            if node.active < node.max_active_gears:
                heapq.heappush(heap, (node.active / node.max_active_gears, i, node))
        if placed:
            self.version += 1
        return placed

    def _idle(self, nodes: list[SimNode], gears: int) -> None:
        """Gears go idle in proportion to each node's active gears."""
        active = sum(n.active for n in nodes)
        if active == 0:
            return
        left = gears
        for node in sorted(nodes, key=lambda n: (-n.active, n.identity)):
            share = min(node.active, -(-gears * node.active // active), left)
            node.active -= share
            node.idle = min(node.idle + share,
                            int(node.max_active_gears * self.idle_cap_factor))
            node.dirty = node.dirty or share > 0
            self.version += share > 0
            left -= share
            if left <= 0:
                break

    # -- drains -----------------------------------------------------------------------
    def start_moves(self, identity: str, limit: int) -> tuple[int, int]:
        """Start up to ``limit`` gear moves off a node; returns (started, remaining)."""
        node = self.nodes.get(identity)
        if node is None:
            return 0, 0
        in_flight = len(node.moves)
        by_state = {"active": node.active, "idle": node.idle, "stopped": node.stopped}
        for move in node.moves:
            by_state[move.state] -= 1
        started = 0
        for state in ("active", "idle", "stopped"):
            while by_state[state] > 0 and started + in_flight < limit:
                ok = self.rng.random() >= self.move_failure_rate
                jitter = self.rng.uniform(0.5, 1.5)
                node.moves.append(Move(self.now + self.move_time * jitter, ok, state))
                by_state[state] -= 1
                started += 1
        if started:
            self.version += 1
            self._moving[node.identity] = node
        return started, node.total - len(node.moves)

    def _finish_moves(self) -> None:
        due = self._next_move_done()
        if due is None or due > self.now:
            return  # nothing ends yet: skip the walk over every node
        self.version += 1
        for node in [n for n in self.nodes.values() if n.moves]:  # in the world's order
            done = [m for m in node.moves if m.done_at <= self.now]
            if not done:
                continue
            node.moves = [m for m in node.moves if m.done_at > self.now]
            self._settled.pop(node.pool, None)  # (its targets are in the same pool)
            if not node.moves:
                self._moving.pop(node.identity, None)
            targets = self._move_targets(node)
            for move in done:
                target = targets[0][2] if targets else None
                if not move.ok or target is None:
                    self.move_stats["failed"] += 1
                    continue
                setattr(node, move.state, getattr(node, move.state) - 1)
                setattr(target, move.state, getattr(target, move.state) + 1)
                node.dirty = target.dirty = True
                self.move_stats["moved"] += 1
                if move.state == "active":  # its density rose: re-rank it, or drop it if full
                    heapq.heappop(targets)
                    if target.active < target.max_active_gears:
                        heapq.heappush(targets, (target.active / target.max_active_gears,
                                                 target.identity, target))

    def _next_move_done(self) -> float | None:
        return min((m.done_at for n in self._moving.values() for m in n.moves), default=None)

    def _move_targets(self, source: SimNode) -> list[tuple[float, str, SimNode]]:
        """Where ``source``'s gears may land, as a heap: the emptiest active node with room
        first (ties by identity); only the chosen target changes while they land."""
        now = self.now
        heap = [(n.active / n.max_active_gears, n.identity, n)
                for n in self._by_pool.get(source.pool, {}).values()
                if n is not source and n.district_active
                and n.powered and now >= n.ready_at and n.active < n.max_active_gears]
        heapq.heapify(heap)
        return heap

    # -- time -------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Move the world to ``now``: score the interval just ended, then update it."""
        elapsed = float(max(0.0, now - self.now))
        if elapsed:
            for pool, unmet in self.unmet.items():
                self.unmet_gear_seconds[pool] = self.unmet_gear_seconds.get(pool, 0.0) + (
                    unmet * elapsed)
            if elapsed.is_integer():
                # Whole seconds: n additions of ``elapsed`` are exactly n * elapsed.
                for (provider, powered), count in self._per_provider.items():
                    if count:
                        spent = self.node_seconds if powered else self.stopped_node_seconds
                        spent[provider] = spent.get(provider, 0.0) + count * elapsed
            else:  # one addition per node, in order, as the float sums were always made
                for node in self.nodes.values():
                    spent = self.node_seconds if node.powered else self.stopped_node_seconds
                    spent[node.provider] = spent.get(node.provider, 0.0) + elapsed
        self.now = now
        if self._unpublished:
            waiting = []
            for node in self._unpublished:
                if node.seq == 0 and self.nodes.get(node.identity) is node:
                    waiting.append(node)
                    if node.ready(now):
                        node.dirty = True
            self._unpublished = waiting
        self._finish_moves()
        for pool in set(self.demand) | {p for p, nodes in self._by_pool.items() if nodes}:
            self._rebalance(pool)

    def next_event(self) -> float | None:
        """When time alone next changes the world (a node boots, a move ends), if ever."""
        now = self.now
        self._booting = [n for n in self._booting
                         if n.ready_at > now and self.nodes.get(n.identity) is n]
        return min(itertools.chain((n.ready_at for n in self._booting),
                                   (m.done_at for n in self._moving.values() for m in n.moves)),
                   default=None)

    def ready_nodes(self) -> list[SimNode]:
        now = self.now
        return [n for n in self.nodes.values() if n.powered and now >= n.ready_at]

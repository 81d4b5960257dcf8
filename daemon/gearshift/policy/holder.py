"""The policies in force, and reloading them without ever losing the last good set.

A reload reads every file again; if any problem is found, the new set is refused as a
whole, the problems are kept (for ``/v1/status`` and the log) and the running set stays.

The daemon reloads with ``reload_async``: reading and parsing run in a worker thread, so a
huge or hostile file (bounded by gearshift.safeyaml, but still seconds of pure-Python
parsing) never holds the event loop that answers ``/healthz`` and the broker; reloads run
one at a time, and only the swap of the set in force happens on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from gearshift.errors import ConfigError
from gearshift.policy.loader import KindSettings, load_policy_set
from gearshift.policy.schema import PolicySet

log = structlog.get_logger(component="gearshift.policy")


class PolicyHolder:
    def __init__(self, paths: Sequence[Path], *,
                 on_reload: Callable[[str], None] | None = None,
                 check: Callable[[PolicySet], list[str]] | None = None,
                 kinds: KindSettings | None = None) -> None:
        self.paths = list(paths)
        self.kinds = kinds  # each provider kind's settings models, checked on every load
        # the first load must succeed
        self.current: PolicySet = load_policy_set(self.paths, kinds=kinds)
        self.problems: list[str] = []
        self.on_reload = on_reload
        self.check = check  # extra reasons to refuse a reloaded set (what needs a restart)
        self._reloading = asyncio.Lock()

    @classmethod
    def fixed(cls, policies: PolicySet) -> PolicyHolder:
        """A holder for policies built in memory (simulate, demo, tests): reload is a no-op."""
        holder = cls.__new__(cls)
        holder.paths = []
        holder.current = policies
        holder.problems = []
        holder.on_reload = None
        holder.check = None
        holder.kinds = None
        holder._reloading = asyncio.Lock()
        return holder

    def reload(self) -> bool:
        """Load the files again; True when the new set is now in force. Blocking."""
        if not self.paths:
            return True
        return self._apply(*self._candidate())

    async def reload_async(self) -> bool:
        """``reload`` with the files read and parsed in a worker thread, one at a time."""
        if not self.paths:
            return True
        async with self._reloading:
            candidate, problems = await asyncio.to_thread(self._candidate)
            return self._apply(candidate, problems)

    def _candidate(self) -> tuple[PolicySet | None, list[str]]:
        """The files' policy set and the reasons to refuse it (thread-safe: reads only)."""
        try:
            candidate = load_policy_set(self.paths, kinds=self.kinds)
            return candidate, self.check(candidate) if self.check is not None else []
        except ConfigError as exc:
            return None, exc.problems
        except Exception as exc:  # a loader bug must refuse the edit, not kill the watcher
            log.exception("policy reload failed unexpectedly")
            return None, [f"{self.paths[0]}:1:1: could not load: {exc.__class__.__name__}"]

    def _apply(self, candidate: PolicySet | None, problems: list[str]) -> bool:
        if problems or candidate is None:
            self.problems = problems
            log.error("policy reload refused: keeping the last good policies",
                      problems=problems)
            if self.on_reload:
                self.on_reload("refused")
            return False
        self.current = candidate
        self.problems = []
        log.info("policies reloaded", pools=[p.name for p in candidate.pools])
        if self.on_reload:
            self.on_reload("ok")
        return True

"""The policies in force, and reloading them without ever losing the last good set.

A reload reads every file again; if any problem is found, the new set is refused as a
whole, the problems are kept (for ``/v1/status`` and the log) and the running set stays.
"""

from __future__ import annotations

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
        return holder

    def reload(self) -> bool:
        """Load the files again; True when the new set is now in force."""
        if not self.paths:
            return True
        try:
            candidate = load_policy_set(self.paths, kinds=self.kinds)
            problems = self.check(candidate) if self.check is not None else []
        except ConfigError as exc:
            problems = exc.problems
        except Exception as exc:  # a loader bug must refuse the edit, not kill the watcher
            log.exception("policy reload failed unexpectedly")
            problems = [f"{self.paths[0]}:1:1: could not load: {exc.__class__.__name__}"]
        if problems:
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

"""Notice edits to the policy files without a signal, by polling their stat() results.

SREs edit policies in place (an editor, ``git pull``, config management) and expect them to
take effect without ``systemctl reload``. Every ``interval`` seconds the watcher stats the
same files the loader would read (``*.yaml``/``*.yml`` directly in each directory, plus
named files): name, inode, size and mtime. That is a handful of ``stat`` calls, needs no
dependency, and works on NFS and bind mounts where inotify (watchfiles) sees nothing.

A change is acted on only once the files have stayed the same for one more poll, so a
file caught half-written does not count as a refused reload; the reload itself goes
through ``PolicyHolder``, which keeps the last good set when the new one is bad.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(component="gearshift.policy")

_SUFFIXES = (".yaml", ".yml")
Fingerprint = tuple[tuple[str, int, int, int], ...]


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                files.extend(sorted(
                    p for p in path.iterdir()
                    if p.suffix in _SUFFIXES and not p.name.startswith((".", "#"))))
            except OSError:
                files.append(path)
        else:
            files.append(path)
    return files


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """What the policy files look like on disk now (a missing file is an entry too)."""
    entries = []
    for file in _files(paths):
        try:
            stat = file.stat()
        except OSError:
            entries.append((str(file), -1, -1, -1))
            continue
        entries.append((str(file), stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class PolicyWatcher:
    """Calls ``on_change`` once per settled edit of the files under ``paths``."""

    def __init__(self, paths: Sequence[Path], *, on_change: Callable[[], None],
                 interval: float = 2.0) -> None:
        self.paths = list(paths)
        self.on_change = on_change
        self.interval = interval
        self.loaded = fingerprint(self.paths)  # what the policies in force were read from
        self._seen = self.loaded
        self.changes = 0

    def mark_loaded(self) -> None:
        """The files were just (re)read by someone else (SIGHUP): nothing new to report."""
        self.loaded = self._seen = fingerprint(self.paths)

    def poll(self) -> bool:
        """One look at the files; True when a settled change was handed to ``on_change``."""
        now = fingerprint(self.paths)
        settled = now == self._seen
        self._seen = now
        if not settled or now == self.loaded:
            return False
        self.loaded = now
        self.changes += 1
        log.info("policy files changed on disk: reloading")
        self.on_change()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            except TimeoutError:
                self.poll()  # a few stat() calls: cheap enough for the event loop

"""The safe command runner: allowlisted templates, checked values, no shell, a timeout.

A platform step (``deactivate``, ``move``, ...) is one command template split once at
start-up; every value substituted into it is checked against a strict pattern first, so
nothing a node reports can become an option or a second command. ``LocalRunner`` runs
templates on this host; ``act.platform.agent.AgentRunner`` sends the same steps to node
agents over MQTT. Both return a ``CommandResult``. The OpenShift district adapter
(``act.platform.openshift``) holds the default templates and decides which step to run;
it lives apart so the runners do not import the adapter, nor the adapter the runners'
transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from gearshift.errors import ConfigError, PlatformError

log = structlog.get_logger(component="gearshift.platform")

# The steps a platform command can be for (``act.platform.openshift.DEFAULT_COMMANDS``).
STEPS = frozenset({"deactivate", "activate", "remove", "add", "move", "list_gears",
                   "list_nodes"})
NODE_STEPS = frozenset({"list_gears"})  # run on the node itself, not on the broker

# What each placeholder may hold. No value may start with "-" (it would be an option).
# \Z, not $: "$" also matches before a trailing newline ("node1\n" would pass).
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\Z")
_DISTRICT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
GEAR = re.compile(r"^[A-Za-z0-9]{8,64}\Z")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_PLACEHOLDERS = frozenset({"host", "district", "gears"})

_OUTPUT_LIMIT = 1 << 20  # keep at most 1 MiB of each of a command's outputs
_CHUNK = 64 * 1024


def check_value(name: str, value: str) -> str:
    """``value`` if it is a safe ``{name}``, else PlatformError."""
    if name == "gears":
        uuids = value.split(",")
        if not uuids or not all(GEAR.match(u) for u in uuids):
            raise PlatformError(f"refusing gear list {value[:80]!r}: not UUIDs")
        return value
    pattern = _HOST if name == "host" else _DISTRICT
    if len(value) > 253 or not pattern.match(value):
        raise PlatformError(f"refusing {name} {value[:80]!r}: not a valid {name}")
    return value


@dataclass(frozen=True)
class CommandTemplate:
    """One step's command line, split once; placeholders are whole arguments."""

    step: str
    argv: tuple[str, ...]

    @classmethod
    def parse(cls, step: str, text: str, *, allowed_programs: list[str]) -> CommandTemplate:
        where = f"platform.commands.{step}"
        if step not in STEPS:
            raise ConfigError([f"{where}: unknown step (known: {', '.join(sorted(STEPS))})"])
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ConfigError([f"{where}: cannot split {text!r}: {exc}"]) from exc
        if not argv:
            raise ConfigError([f"{where}: empty command"])
        if argv[0] not in allowed_programs:
            raise ConfigError([f"{where}: program {argv[0]!r} is not in "
                               f"platform.allowed_programs ({', '.join(allowed_programs)})"])
        for arg in argv:
            names = _PLACEHOLDER.findall(arg)
            if not names and "{" not in arg and "}" not in arg:
                continue
            if len(names) != 1 or arg != f"{{{names[0]}}}":
                raise ConfigError([f"{where}: {arg!r}: a placeholder must be a whole "
                                   f"argument, such as {{host}}"])
            if names[0] not in _PLACEHOLDERS:
                raise ConfigError([f"{where}: unknown placeholder {{{names[0]}}} "
                                   f"(known: {', '.join(sorted(_PLACEHOLDERS))})"])
        return cls(step, argv)

    @property
    def placeholders(self) -> set[str]:
        return {a[1:-1] for a in self.argv if _PLACEHOLDER.fullmatch(a)}

    def render(self, values: Mapping[str, str]) -> list[str]:
        argv = []
        for arg in self.argv:
            if _PLACEHOLDER.fullmatch(arg):
                name = arg[1:-1]
                if name not in values:
                    raise PlatformError(f"{self.step}: no value for {{{name}}}")
                argv.append(check_value(name, values[name]))
            else:
                argv.append(arg)
        return argv


@dataclass(frozen=True)
class CommandResult:
    """What a command did, from either runner (the agent protocol's reply fields)."""

    ok: bool
    exit_code: int | None
    stdout: str
    stderr: str
    error: str | None = None

    def describe(self) -> str:
        detail = self.error or (self.stderr.strip() or self.stdout.strip())[-300:]
        return f"exit {self.exit_code}: {detail}" if self.exit_code is not None else detail


class Runner(Protocol):
    async def run(self, step: str, args: Mapping[str, str], *, node: str,
                  timeout: float | None = None) -> CommandResult:
        """Run ``step`` with ``args``; ``node`` is the node it is about; ``timeout``
        overrides the runner's own."""

    async def close(self) -> None:
        """Release connections."""

    def has(self, step: str) -> bool:
        """Can this runner run ``step`` at all (an agent is asked and may refuse)?"""


def _child_env() -> dict[str, str]:
    """The daemon's environment without gearshift's own settings (they may hold secrets)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GEARSHIFT")}


class LocalRunner:
    """Runs the templates on this host: no shell, a timeout, the process killed on it."""

    def __init__(self, templates: Mapping[str, CommandTemplate], *, timeout: float) -> None:
        self.templates = templates
        self.timeout = timeout

    def has(self, step: str) -> bool:
        return step in self.templates

    async def run(self, step: str, args: Mapping[str, str], *, node: str,
                  timeout: float | None = None) -> CommandResult:
        argv = self.templates[step].render(args)
        limit = timeout if timeout is not None else self.timeout
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_child_env(), limit=_OUTPUT_LIMIT)
        except OSError as exc:
            return CommandResult(False, None, "", "", f"cannot run {argv[0]}: {exc.strerror}")
        assert process.stdout is not None and process.stderr is not None
        try:
            async with asyncio.timeout(limit):
                out, err, _ = await asyncio.gather(_read_bounded(process.stdout),
                                                   _read_bounded(process.stderr),
                                                   process.wait())
        except TimeoutError:
            await _kill(process)
            return CommandResult(False, None, "", "", f"{argv[0]} timed out after "
                                                      f"{limit:g}s; killed")
        except asyncio.CancelledError:
            await _kill(process)
            raise
        code = process.returncode
        log.debug("platform command", step=step, node=node, exit_code=code,
                  seconds=round(time.perf_counter() - started, 2))
        return CommandResult(code == 0, code, out.decode("utf-8", "replace"),
                             err.decode("utf-8", "replace"))

    async def close(self) -> None:
        return None


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    """The first ``_OUTPUT_LIMIT`` bytes of ``stream``; the rest is read and dropped, so
    the command neither blocks on a full pipe nor makes us hold all it prints
    (``communicate()`` would keep every byte until the command ends)."""
    kept = bytearray()
    while chunk := await stream.read(_CHUNK):
        if len(kept) < _OUTPUT_LIMIT:
            kept += chunk[:_OUTPUT_LIMIT - len(kept)]
    return bytes(kept)


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(Exception):
        await process.wait()

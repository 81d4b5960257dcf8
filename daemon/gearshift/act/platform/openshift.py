"""``platform.kind: openshift``: take OpenShift v2 nodes in and out of service.

Every step is one allowlisted command template (``platform.commands`` overrides the
defaults below), run either **on the broker host** (``via: broker``: an asyncio
subprocess, never a shell) or **through the node agents** (``via: agent``: an MQTT 5
request on ``{prefix}/nodes/{identity}/command``, see ``act.platform.agent``)::

    deactivate  oo-admin-ctl-district -c deactivate-node -u {district} -i {host}
    activate    oo-admin-ctl-district -c activate-node -u {district} -i {host}
    remove      oo-admin-ctl-district -c remove-node -u {district} -i {host}
    add         oo-admin-ctl-district -c add-node -u {district} -i {host}
    move        oo-admin-move --gear_uuid {gears} --json
    list_gears  ssh -o BatchMode=yes {host} oo-admin-ctl-gears list

Templates are split like a shell would (``shlex``) once, at start-up; a placeholder must
be a whole argument (``{host}``, never ``--host={host}``), the program must be in
``allowed_programs``, and every value is checked against a strict pattern before it is
substituted, so nothing a node reports can become an option or a second command.

**Which gears to move.** ``oo-admin-move`` needs gear UUIDs, which no fact carries.
``list_gears`` asks the node: ``oo-admin-ctl-gears list`` prints one UUID per line of
every gear on it (whatever its state). Via the broker it runs over ssh (key-based,
``BatchMode``); via agents it is sent to *the draining node's own agent*, the others to
``agent_identity`` (the agent on the broker host). Lines that are not a UUID are ignored.

**Moves.** ``move_gears(node, limit=n)`` lists the node's gears, then starts moves in
the background for up to ``n`` gears in flight per node: ``gears_per_move`` UUIDs per
``oo-admin-move`` call, ``move_parallel`` calls at once, and returns at once (a move
takes minutes). The ``--json`` report says which gears moved; a gear that failed is
retried after ``move_retry_after``. Nothing is remembered that a restart needs: the next
listing shows what is left, so a drain resumes where it stopped.

**Idempotency.** ``oo-admin-ctl-district`` reports errors as ``ERROR OUTPUT:`` with exit
status 0; the adapter treats that as a failure, except for the answers that mean the
step is already done ("is already deactivated", "is already active", "doesn't belong to
district" on remove, "already belongs to" on add), so a resumed drain can repeat
its last step safely; a remove of a node in no district is done already.

**New nodes.** A blueprint may name the ``district`` its nodes join: once a new node
publishes facts in no district, the executor runs ``add`` for it, and counts it as
booting until its facts show the district.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import structlog

from gearshift.act.platform.base import GearCount, MoveReport, NodeRef, Platform
from gearshift.act.platform.commands import (
    GEAR,
    NODE_STEPS,
    STEPS,
    CommandResult,
    CommandTemplate,
    LocalRunner,
    Runner,
    check_value,
)
from gearshift.act.platform.districts import district_members
from gearshift.errors import ConfigError, PlatformError
from gearshift.settings import MqttSettings, PlatformSettings
from gearshift.wire.signing import Keyring

log = structlog.get_logger(component="gearshift.platform")

DEFAULT_COMMANDS: dict[str, str] = {
    "deactivate": "oo-admin-ctl-district -c deactivate-node -u {district} -i {host}",
    "activate": "oo-admin-ctl-district -c activate-node -u {district} -i {host}",
    "remove": "oo-admin-ctl-district -c remove-node -u {district} -i {host}",
    "add": "oo-admin-ctl-district -c add-node -u {district} -i {host}",
    "move": "oo-admin-move --gear_uuid {gears} --json",
    "list_gears": "ssh -o BatchMode=yes {host} oo-admin-ctl-gears list",
    "list_nodes": "oo-admin-ctl-district",
}
assert frozenset(DEFAULT_COMMANDS) == STEPS  # a step is a template here and a name there

# oo-admin-ctl-district answers that mean "already done" for a step.
_ALREADY = {
    "deactivate": ("is already deactivated",),
    "activate": ("is already active",),
    "remove": ("doesn't belong to district",),
    "add": ("already belongs to",),
}


@dataclass
class _Moves:
    """Gear moves of one draining node."""

    in_flight: set[str] = field(default_factory=set)
    failed_at: dict[str, float] = field(default_factory=dict)  # uuid -> monotonic time
    failed_since_report: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class OpenShiftPlatform(Platform):
    def __init__(self, settings: PlatformSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self._moves: dict[str, _Moves] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}

    # -- districts --------------------------------------------------------------------
    async def _district_step(self, step: str, node: NodeRef) -> None:
        if not node.district or node.district.upper() == "NONE":
            raise PlatformError(f"{step} {node.identity}: the node is in no district")
        result = await self.runner.run(step, {"district": node.district, "host": node.identity},
                                       node=node.identity)
        output = f"{result.stdout}\n{result.stderr}"
        if any(text in output for text in _ALREADY.get(step, ())):
            log.info("platform step already done", step=step, node=node.identity)
            return
        if not result.ok or "ERROR OUTPUT:" in result.stdout:
            raise PlatformError(f"{step} {node.identity} in district {node.district} failed: "
                                f"{result.describe()}")
        log.info("platform step done", step=step, node=node.identity, district=node.district)

    async def deactivate(self, node: NodeRef) -> None:
        await self._district_step("deactivate", node)

    async def activate(self, node: NodeRef) -> None:
        await self._district_step("activate", node)

    async def remove(self, node: NodeRef) -> None:
        if not node.district or node.district.upper() == "NONE":
            # In no district: there is nothing to remove it from (a resumed retire whose
            # remove-node already ran, or a node that never joined one).
            log.info("platform step done", step="remove", node=node.identity,
                     district=None, note="in no district already")
            return
        await self._district_step("remove", node)

    async def add(self, node: NodeRef) -> None:
        await self._district_step("add", node)

    # -- gears ------------------------------------------------------------------------
    async def list_gears(self, node: NodeRef) -> list[str]:
        """The UUIDs of every gear on ``node`` (one per line of ``oo-admin-ctl-gears list``)."""
        result = await self.runner.run("list_gears", {"host": node.identity},
                                       node=node.identity, timeout=self.settings.list_timeout)
        if not result.ok:
            raise PlatformError(f"cannot list the gears of {node.identity}: {result.describe()}")
        gears = []
        for line in result.stdout.splitlines():
            word = line.strip()
            if GEAR.match(word) and word not in gears:
                gears.append(word)
        return gears

    async def gears(self, node: NodeRef) -> GearCount | None:
        """The second witness before a retire: the node's gear listing, asked over ssh from
        the broker or from the node's agent (signed), never its published facts."""
        return GearCount(total=len(await self.list_gears(node)), active=None,
                         source="list_gears")

    async def members(self) -> frozenset[str] | None:
        if not self.runner.has("list_nodes"):
            return None
        result = await self.runner.run("list_nodes", {}, node="",
                                       timeout=self.settings.list_timeout)
        if not result.ok or "ERROR OUTPUT:" in result.stdout:
            raise PlatformError(f"cannot list the district members: {result.describe()}")
        return district_members(result.stdout)

    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        state = self._moves.setdefault(node.identity, _Moves())
        gears = await self.list_gears(node)
        now = time.monotonic()
        retry = self.settings.move_retry_after
        state.failed_at = {g: t for g, t in state.failed_at.items() if g in gears}
        waiting = [g for g in gears if g not in state.in_flight
                   and now - state.failed_at.get(g, -retry) >= retry]
        chosen = waiting[:max(0, limit - len(state.in_flight))]
        size = self.settings.gears_per_move
        for start in range(0, len(chosen), size):
            batch = chosen[start:start + size]
            state.in_flight.update(batch)
            task = asyncio.create_task(self._move(node, batch, state),
                                       name=f"move {node.identity} {len(batch)} gears")
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        failed, state.failed_since_report = state.failed_since_report, 0
        if chosen:
            log.info("moving gears", node=node.identity, started=len(chosen),
                     in_flight=len(state.in_flight), left=len(gears))
        return MoveReport(started=len(chosen), failed=failed,
                          remaining=len([g for g in gears if g not in state.in_flight]))

    def _limiter(self, node: NodeRef) -> asyncio.Semaphore:
        """At most ``move_parallel`` oo-admin-move processes per node at once."""
        if node.identity not in self._limits:
            self._limits[node.identity] = asyncio.Semaphore(self.settings.move_parallel)
        return self._limits[node.identity]

    async def _move(self, node: NodeRef, gears: list[str], state: _Moves) -> None:
        try:
            async with self._limiter(node):
                result = await self.runner.run("move", {"gears": ",".join(gears)},
                                               node=node.identity)
            failed = _failed_moves(gears, result)
        except PlatformError as exc:
            log.warning("gear move failed", node=node.identity, gears=len(gears), error=str(exc))
            failed = list(gears)
        except Exception:  # a bug must not lose track of the gears in flight
            log.exception("gear move crashed", node=node.identity)
            failed = list(gears)
        finally:
            state.in_flight.difference_update(gears)
        if failed:
            now = time.monotonic()
            for gear in failed:
                state.failed_at[gear] = now
            state.failed_since_report += len(failed)
            log.warning("gears not moved", node=node.identity, failed=len(failed),
                        of=len(gears), retry_in=self.settings.move_retry_after)

    async def wait_moves(self, identity: str | None = None) -> None:
        """Wait until the moves in flight (of one node, or all) are done."""
        states = [self._moves[identity]] if identity in self._moves else (
            list(self._moves.values()) if identity is None else [])
        tasks = [t for s in states for t in s.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [t for s in self._moves.values() for t in s.tasks]
        if tasks:
            log.info("waiting for gear moves in flight", moves=len(tasks),
                     grace=self.settings.stop_grace)
            _, pending = await asyncio.wait(tasks, timeout=self.settings.stop_grace)
            for task in pending:
                task.cancel()  # the runner kills the process; the drain resumes after restart
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("interrupted gear moves at shutdown", moves=len(pending))
        await self.runner.close()


def _failed_moves(gears: list[str], result: CommandResult) -> list[str]:
    """Gears an ``oo-admin-move --json`` run did not move. Without a readable report, the
    exit status decides for the whole batch. A gear the broker does not know any more
    (deleted meanwhile) is not a failure: it is not on the node."""
    text = result.stdout
    report = None
    if "{" in text:
        with contextlib.suppress(ValueError):
            report = json.loads(text[text.index("{"):text.rindex("}") + 1])
    if not isinstance(report, dict):
        return [] if result.ok else list(gears)
    failed = []
    for gear in gears:
        entry = report.get(gear)
        if not isinstance(entry, dict):
            if not result.ok:
                failed.append(gear)
            continue
        message = str(entry.get("message", ""))
        if entry.get("result") is not True and "Gear not found" not in message:
            failed.append(gear)
    return failed


def build_openshift(settings: PlatformSettings, *, mqtt: MqttSettings | None = None,
                    keyring: Keyring | None = None) -> OpenShiftPlatform:
    """The adapter from settings; ConfigError for anything wrong, before anything runs."""
    unknown = sorted(set(settings.commands) - STEPS)
    if unknown:
        raise ConfigError([f"platform.commands: unknown step(s) {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(STEPS))})"])
    if settings.via == "agent":
        from gearshift.act.platform.agent import AgentRunner  # noqa: PLC0415 - MQTT only here

        if mqtt is None:
            raise ConfigError(["platform.via agent needs the mqtt settings"])
        if not settings.agent_identity:
            raise ConfigError(["platform.agent_identity: required with via: agent (the "
                               "agent on the broker host that runs oo-admin-*)"])
        try:
            check_value("host", settings.agent_identity)
        except PlatformError as exc:
            raise ConfigError([f"platform.agent_identity: {exc}"]) from exc
        if mqtt.protocol != "5":
            raise ConfigError(["platform.via agent needs MQTT 5 (response topic and "
                               "correlation data); set mqtt.protocol: '5'"])
        return OpenShiftPlatform(settings, AgentRunner(
            mqtt, broker_identity=settings.agent_identity, node_steps=NODE_STEPS,
            timeout=settings.timeout, keyring=keyring))
    # list_nodes came later: a config whose allowed_programs predate it goes without it
    # (no vouching) rather than failing to start.
    steps = {step: default for step, default in DEFAULT_COMMANDS.items()
             if step != "list_nodes" or step in settings.commands
             or default.split()[0] in settings.allowed_programs}
    templates = {step: CommandTemplate.parse(step, settings.commands.get(step, default),
                                             allowed_programs=settings.allowed_programs)
                 for step, default in steps.items()}
    needs = {"deactivate": {"district", "host"}, "activate": {"district", "host"},
             "remove": {"district", "host"}, "add": {"district", "host"}, "move": {"gears"},
             "list_gears": {"host"}, "list_nodes": set()}
    for step, template in templates.items():
        extra = template.placeholders - needs[step]
        if extra:
            raise ConfigError([f"platform.commands.{step}: {{{sorted(extra)[0]}}} has no value "
                               f"in this step (it has: {', '.join(sorted(needs[step]))})"])
    return OpenShiftPlatform(settings, LocalRunner(templates, timeout=settings.timeout))

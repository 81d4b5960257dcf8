"""The second witness: before a machine is destroyed, someone besides the node must agree.

A node's facts say it is empty; they travel over a broker that others may publish on.
So before a retire removes a node from its district and destroys its machine, two other
sources are asked:

* the platform's own view of the node's gears (``Platform.gears``: the node's gear
  listing over ssh from the broker host or from its agent with a signed reply, or the
  simulated world's record): it must show no active gears (or no gears at all where it
  cannot tell active from idle);
* the provider's listing of machines we own: the machine to destroy must carry the name
  of the node being retired (a machine renamed or reused is not destroyed). One listing
  per provider serves every retire of a reconcile's batch of actions (seconds apart).

A platform that cannot tell (``platform: none``) leaves the facts as the only witness:
the daemon warns at start and ``trust.facts: require_signed`` makes those facts the
node's own, signed word. A disagreement refuses the retire, names both views and lets
the caller hold the node and cancel its drain.
"""

from __future__ import annotations

from dataclasses import dataclass

from gearshift.act.platform.base import NodeRef, Platform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.model import Machine, NodeFacts


@dataclass(frozen=True)
class Disagreement:
    """Why the witnesses refused a retire: both views, for the log and the alert."""

    witness: str  # "platform" or "provider"
    facts_say: str
    witness_says: str

    def describe(self) -> str:
        return f"the node's facts say {self.facts_say}; the {self.witness} says " \
               f"{self.witness_says}"


async def confirm_retire(*, identity: str, facts: NodeFacts, platform: Platform,
                         provider: GuardedProvider, machine_id: str,
                         listed: dict[str, list[Machine]] | None = None
                         ) -> Disagreement | None:
    """None when every witness that can tell agrees the node may go; raises
    PlatformError/ProviderError when a witness cannot be asked (the retire then waits).
    ``listed``: listings already made in this batch of actions (by provider name), reused
    and added to (a scale-in of 20 nodes lists its provider once, not 20 times)."""
    facts_say = f"{facts.gears.active} active of {facts.gears.total} gears"
    count = await platform.gears(NodeRef(identity, facts.district_uuid))
    if count is not None and not count.empty_enough:
        active = "unknown" if count.active is None else str(count.active)
        return Disagreement("platform", facts_say,
                            f"{active} active of {count.total} gears ({count.source})")
    machines = listed.get(provider.name) if listed is not None else None
    if machines is None:
        machines = await provider.list_owned()
        if listed is not None:
            listed[provider.name] = machines
    machine = next((m for m in machines if m.machine_id == machine_id), None)
    if machine is not None and machine.name and machine.name != identity:
        return Disagreement("provider", f"it is {identity}",
                            f"machine {machine_id} is {machine.name}")
    return None

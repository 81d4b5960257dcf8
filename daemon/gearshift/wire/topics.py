"""The MQTT topic names, in one place, so every speaker builds them the same way.

Everything lives under a configured prefix (``mqtt.prefix``, default ``gearshift/v1``):

* ``{prefix}/nodes/{identity}/facts``    retained node facts (``wire.facts``);
* ``{prefix}/nodes/{identity}/status``   retained ``online`` / ``offline`` (last will);
* ``{prefix}/nodes/{identity}/command``  platform commands to a node's agent;
* ``{prefix}/nodes/{identity}/reply``    an agent's replies when the broker has no MQTT 5;
* ``{prefix}/daemon/{client id}/replies`` where the daemon asks for replies (MQTT 5);
* ``{prefix}/requests``                  capacity requests;
* ``{prefix}/unplaced``                  unplaced gears reported by a broker-side hook;
* ``{prefix}/sync/{client id}``          the fact source's catch-up marker.
"""

from __future__ import annotations

from typing import Literal

DEFAULT_PREFIX = "gearshift/v1"

NodeTopic = Literal["facts", "status", "command", "reply"]


def base(prefix: str) -> str:
    """``prefix`` without a trailing slash."""
    return prefix.rstrip("/")


def node(prefix: str, identity: str, kind: NodeTopic) -> str:
    """``{prefix}/nodes/{identity}/{kind}``."""
    return f"{base(prefix)}/nodes/{identity}/{kind}"


def all_nodes(prefix: str, kind: NodeTopic) -> str:
    """The subscription filter for ``kind`` of every node."""
    return f"{base(prefix)}/nodes/+/{kind}"


def requests(prefix: str) -> str:
    return f"{base(prefix)}/requests"


def unplaced(prefix: str) -> str:
    return f"{base(prefix)}/unplaced"


def sync(prefix: str, client_id: str) -> str:
    return f"{base(prefix)}/sync/{client_id}"


def daemon_replies(prefix: str, client_id: str) -> str:
    return f"{base(prefix)}/daemon/{client_id}/replies"

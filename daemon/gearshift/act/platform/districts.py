"""Read the district members out of ``oo-admin-ctl-district``'s listing.

Run with no arguments, ``oo-admin-ctl-district`` prints every district as a Ruby hash
(``pp`` of its attributes), its nodes under ``"servers"=>[{"name"=>"node1...", ...}]``.
That listing is the broker's own record of which hosts are nodes: gearshift counts a node
it did not create only when a district lists it, so facts published under a made-up
identity never count for a pool. A template may also print one host name per line.
"""

from __future__ import annotations

import re

_SERVERS = re.compile(r'"servers"\s*=>\s*\[')
_NAME = re.compile(r'"name"\s*=>\s*"([A-Za-z0-9.-]{1,253})"')
_HOST_LINE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")


def _bracketed(text: str, start: int) -> str:
    """The text from ``start`` (just after a ``[``) to its matching ``]``."""
    depth = 1
    for index in range(start, len(text)):
        char = text[index]
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return text[start:]


def district_members(output: str) -> frozenset[str]:
    """Host names of every node in every district the listing shows."""
    if "=>" not in output:
        return frozenset(line.strip() for line in output.splitlines()
                         if _HOST_LINE.fullmatch(line.strip()))
    members: set[str] = set()
    for match in _SERVERS.finditer(output):
        members.update(_NAME.findall(_bracketed(output, match.end())))
    return frozenset(members)

"""Read the district members out of ``oo-admin-ctl-district``'s listing.

Run with no arguments, ``oo-admin-ctl-district`` prints every district as a Ruby hash
(``pp`` of its attributes), its nodes under ``"servers"=>[{"name"=>"node1...", ...}]``.
That listing is the broker's own record of which hosts are nodes: gearshift counts a node
it did not create only when a district lists it, so facts published under a made-up
identity never count for a pool. A template may also print one host name per line.
"""

from __future__ import annotations

import re

# One scan over the listing: a "servers" list opening, any other bracket, or a node name.
_TOKEN = re.compile(r'("servers"\s*=>\s*\[)|(\[)|(\])|"name"\s*=>\s*"([A-Za-z0-9.-]{1,253})"')
_HOST_LINE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")


def district_members(output: str) -> frozenset[str]:
    """Host names of every node in every district the listing shows: each ``"name"``
    inside a ``"servers"`` list (to its matching ``]``, or to the end when it has none).

    One pass, whatever the listing holds: the command's output is capped (1 MiB), but a
    rescan per ``"servers"`` opening would make a listing of nothing but openings cost
    time quadratic in its size, on the event loop."""
    if "=>" not in output:
        return frozenset(line.strip() for line in output.splitlines()
                         if _HOST_LINE.fullmatch(line.strip()))
    members: set[str] = set()
    depth = 0
    servers_at: list[int] = []  # the depth each open "servers" list started at
    for match in _TOKEN.finditer(output):
        servers, opened, closed, name = match.groups()
        if servers or opened:
            depth += 1
            if servers:
                servers_at.append(depth)
        elif closed:
            if servers_at and servers_at[-1] == depth:
                servers_at.pop()
            depth = max(0, depth - 1)
        elif servers_at:
            members.add(name)
    return frozenset(members)

#!/usr/bin/env python3
"""Stand-ins for OpenShift v2's admin tools, for the platform adapter's tests.

Installed (by ``install``) as executables named ``oo-admin-ctl-district``,
``oo-admin-move`` and ``oo-admin-ctl-gears``; they act on a JSON state file (districts,
nodes, gears) named by ``FAKE_OPENSHIFT_STATE``, log every invocation's argv to
``FAKE_OPENSHIFT_LOG``, and answer the way the real tools do (from the origin-server
sources): ``oo-admin-ctl-district`` prints ``ERROR OUTPUT:`` and still exits 0,
``oo-admin-move --json`` prints a per-gear report. The state in the file:

    {"districts": {"d1": {"n1.example.com": true, ...}},   # node -> active
     "gears": {"uuid": "n1.example.com", ...},              # gear -> node
     "fail_once": ["uuid", ...],                            # moves that fail the 1st time
     "move_seconds": 0.1}
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAMES = ("oo-admin-ctl-district", "oo-admin-move", "oo-admin-ctl-gears")


def install(directory: Path) -> dict[str, str]:
    """Write the tools into ``directory``; returns their absolute paths by name."""
    paths = {}
    source = Path(__file__).read_text()
    for name in NAMES:
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(0o755)
        paths[name] = str(path)
    return paths


@contextmanager
def state() -> Iterator[dict[str, Any]]:
    path = Path(os.environ["FAKE_OPENSHIFT_STATE"])
    with path.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        data = json.load(handle)
        yield data
        handle.seek(0)
        handle.truncate()
        json.dump(data, handle)


def log(argv: list[str], **extra: Any) -> None:
    with open(os.environ["FAKE_OPENSHIFT_LOG"], "a") as handle:
        handle.write(json.dumps({"argv": argv, "pid": os.getpid(), "t": time.time(), **extra})
                     + "\n")


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


def district_tool(argv: list[str]) -> int:
    command, district, host = option(argv, "-c"), option(argv, "-u"), option(argv, "-i")
    if command is None:  # no arguments: list every district, as `pp` of its attributes
        with state() as data:
            for uuid, members in data["districts"].items():
                servers = ", ".join(f'{{"_id"=>"x{i}", "name"=>"{name}", "active"=>'
                                    f'{str(active).lower()}, "unresponsive"=>false}}'
                                    for i, (name, active) in enumerate(members.items()))
                print(f'{{"_id"=>"{uuid}", "uuid"=>"{uuid}", "name"=>"district-{uuid[:4]}", '
                      f'"gear_size"=>"small", "available_capacity"=>5990, '
                      f'"servers"=>[{servers}], "available_uids"=>"<5990 uids hidden>"}}')
        return 0
    with state() as data:
        nodes = data["districts"].get(district)
        if nodes is None:
            print(f"District '{district}' not found.")
            return 1
        error = None
        if command in ("deactivate-node", "activate-node", "remove-node") and host not in nodes:
            error = f"Node with server identity: {host} doesn't belong to district: {district}"
        elif command == "deactivate-node":
            if not nodes[host]:
                error = f"Node with server identity: {host} is already deactivated"
            nodes[host] = False
        elif command == "activate-node":
            if nodes[host]:
                error = f"Node with server identity: {host} is already active"
            nodes[host] = True
        elif command == "remove-node":
            if nodes[host]:
                error = (f"Node with server identity: {host} from district: {district} "
                         f"must be deactivated before it can be removed")
            elif any(node == host for node in data["gears"].values()):
                error = (f"Node with server identity: {host} could not be removed from "
                         f"district: {district} because it still has apps on it")
            else:
                del nodes[host]
        elif command == "add-node":
            home = next((d for d, members in data["districts"].items() if host in members), None)
            if home is not None:
                error = (f"Node with server identity: {host} already belongs to another "
                         f"district: {home}")
            else:
                nodes[host] = True
    if error:
        print(f"ERROR OUTPUT:\n{error}")  # and exit status 0, as the real tool does
    else:
        print("Success!")
    return 0


def move_tool(argv: list[str]) -> int:
    uuids = (option(argv, "--gear_uuid") or "").split(",")
    started = time.time()
    with state() as data:
        delay = data.get("move_seconds", 0.0)
    time.sleep(delay * len(uuids))
    report: dict[str, Any] = {}
    rc = 0
    with state() as data:
        for uuid in uuids:
            source = data["gears"].get(uuid)
            if source is None:
                report[uuid] = {"result": False, "message": f"ERROR: Gear not found: {uuid}"}
                rc |= 1
                continue
            if uuid in data.get("fail_once", []):
                data["fail_once"].remove(uuid)
                report[uuid] = {"result": False, "message": "Node execution failure"}
                continue
            district = next(d for d, nodes in data["districts"].items() if source in nodes)
            targets = [n for n, active in data["districts"][district].items()
                       if active and n != source]
            if not targets:
                report[uuid] = {"result": False, "message": "No available nodes"}
                continue
            count = {n: sum(1 for g in data["gears"].values() if g == n) for n in targets}
            target = min(targets, key=lambda n: (count[n], n))
            data["gears"][uuid] = target
            report[uuid] = {"result": True, "source": source, "destination": target}
    log(argv, started=started, ended=time.time())
    print(json.dumps(report))
    return rc


def gears_tool(argv: list[str]) -> int:
    host = argv[-1]
    print("Warning: this line is not a gear")
    with state() as data:
        for uuid, node in data["gears"].items():
            if node == host:
                print(uuid)
    return 0


def main() -> int:
    name = Path(sys.argv[0]).name
    argv = [name, *sys.argv[1:]]
    if name != "oo-admin-move":
        log(argv)
    if name == "oo-admin-ctl-district":
        return district_tool(argv)
    if name == "oo-admin-move":
        return move_tool(argv)
    return gears_tool(argv)


if __name__ == "__main__":
    sys.exit(main())

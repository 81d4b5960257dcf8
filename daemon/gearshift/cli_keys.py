"""``gearshift keys``: make the daemon's keyring, hand each node its key, rotate.

    gearshift keys new --out /etc/gearshift/keyring          # first master key
    gearshift keys node node1.example.com --keyring /etc/gearshift/keyring --out node.key
    gearshift keys rotate --keyring /etc/gearshift/keyring   # add a newer master key

Files are written mode 600 and never over an existing file (``rotate`` rewrites the
keyring through a new file and a rename). No key is ever printed unless ``--out -``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from gearshift.wire.signing import Keyring, new_master_line, node_key_lines, write_private


def _default_kid() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("k%Y%m%d%H%M%S")


def _emit(text: str, out: str) -> None:
    if out == "-":
        sys.stdout.write(text)
    else:
        write_private(Path(out), text)
        print(f"wrote {out} (mode 600)", file=sys.stderr)


def _cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "new":
        _emit(f"# gearshift keyring: the daemon's master keys, newest first\n"
              f"{new_master_line(args.kid or _default_kid())}\n", args.out)
        return 0
    if args.keyring is None:
        raise ValueError(f"keys {args.action} needs --keyring FILE")
    keyring = Keyring.load(args.keyring)
    if args.action == "node":
        if not args.identity:
            raise ValueError("keys node needs the node's IDENTITY")
        _emit(f"# gearshift node key of {args.identity}, newest first\n"
              + "".join(f"{line}\n" for line in node_key_lines(keyring, args.identity)),
              args.out)
        return 0
    kid = args.kid or _default_kid()
    if any(k == kid for k, _ in keyring.keys):
        raise ValueError(f"key id {kid} is in the keyring already")
    old = args.keyring.read_text(encoding="utf-8").splitlines()
    body = [line for line in old if line.strip() and not line.startswith("#")]
    keep = body[: max(1, args.keep) - 1] if args.keep else body
    fresh = args.keyring.with_name(args.keyring.name + ".new")
    write_private(fresh, "# gearshift keyring: the daemon's master keys, newest first\n"
                  + "".join(f"{line}\n" for line in [new_master_line(kid), *keep]))
    os.replace(fresh, args.keyring)
    print(f"added key {kid} to {args.keyring} ({len(keep) + 1} keys); hand every node its "
          f"new key (gearshift keys node), reload the daemon", file=sys.stderr)
    return 0


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="make and rotate the keys that sign facts and commands",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["new", "node", "rotate"])
    p.add_argument("identity", nargs="?", help="keys node: the node's identity")
    p.add_argument("--keyring", type=Path, help="the daemon's keyring (trust.keyring_file)")
    p.add_argument("--kid", help="id of the new key (default: k + UTC time)")
    p.add_argument("--out", default="-", help="file to write (mode 600, must not exist); "
                                              "- prints it")
    p.add_argument("--keep", type=int, default=0,
                   help="rotate: keep at most this many keys in all (0: keep every old key)")
    p.set_defaults(func=_cmd_keys)

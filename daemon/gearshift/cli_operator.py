"""Operator subcommands of ``gearshift`` that talk to a running daemon over its HTTP API.

``status``, ``pause``/``resume`` and ``health`` (and the ``--url``/``--token-file`` options
they share with ``plan --url``) live here, apart from ``cli.py``'s parser and local
commands, so each file stays readable. ``cli.main`` maps their errors to exit codes: an
unreachable daemon exits 3, a refusal (bad token, unknown pool) exits 1; ``health`` exits
1 for any failure, since container health checks know only 0 and 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path

from gearshift.errors import ApiError


def cmd_status(args: argparse.Namespace) -> int:
    from gearshift.client import DaemonClient, render_status  # noqa: PLC0415

    status = DaemonClient(args.url).get("/v1/status")
    print(json.dumps(status, indent=2) if args.json else render_status(status, url=args.url))
    return 0


def cmd_pause_resume(args: argparse.Namespace) -> int:
    from gearshift.client import DaemonClient, read_token_file  # noqa: PLC0415

    client = DaemonClient(args.url, token=read_token_file(args.token_file))
    answer = client.post(f"/v1/pools/{urllib.parse.quote(args.pool, safe='')}/{args.command}")
    state = "paused: no actions until resumed" if answer.get("paused") else "resumed"
    print(f"pool {answer.get('pool', args.pool)} {state}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from gearshift.client import DaemonClient  # noqa: PLC0415
    from gearshift.errors import DaemonUnreachable  # noqa: PLC0415

    try:
        body = DaemonClient(args.url, timeout=args.timeout).get("/healthz")
    except ApiError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    except DaemonUnreachable as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1  # container health checks know only 0 and 1
    print(json.dumps(body))
    return 0


def operator_options(p: argparse.ArgumentParser, *, token: bool = False) -> None:
    from gearshift.client import default_url  # noqa: PLC0415

    p.add_argument("--url", default=default_url(),
                   help="the daemon's HTTP API (default $GEARSHIFT_URL or "
                        "http://127.0.0.1:9310)")
    if token:
        p.add_argument("--token-file", type=Path,
                       help="file holding the API token (default $GEARSHIFT_TOKEN_FILE)")

"""The ``gearshift`` command: one subcommand per job, each with a ``--help`` that helps.

Exit codes: 0 success, 1 invalid input (problems printed as ``FILE:LINE:COL: message``),
2 bad usage (argparse), 3 a runtime failure (a peer unreachable, ...).

Operator commands (``status``, ``pause``, ``resume``, ``plan --url``, ``health``) talk to a
running daemon over its HTTP API (``--url``, default ``$GEARSHIFT_URL`` or
http://127.0.0.1:9310); an unreachable daemon exits 3, a refusal (bad token, unknown pool)
exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gearshift import __version__
from gearshift.cli_keys import add_keys_parser
from gearshift.cli_operator import cmd_health, cmd_pause_resume, cmd_status, operator_options
from gearshift.cli_plan import cmd_plan, cmd_simulate
from gearshift.errors import ApiError, ConfigError, GearshiftError

EPILOG = """\
examples:
  gearshift validate /etc/gearshift/policies /etc/gearshift/providers.yaml
  gearshift plan --config /etc/gearshift/config.yaml --snapshot fleet.json
  gearshift status                       # the running daemon, as tables
  gearshift pause small --token-file /etc/gearshift/api.token
  gearshift plan --url http://127.0.0.1:9310
  gearshift config example > /etc/gearshift/config.yaml
  gearshift simulate --policies policies/examples/flash-crowd/pools \\
      --providers policies/examples/flash-crowd/providers.yaml \\
      --trace policies/examples/flash-crowd/trace.csv --report-json report.json
  gearshift demo --for 60
"""


def _cmd_validate(args: argparse.Namespace) -> int:
    from gearshift.act.providers.kind_settings import KIND_SETTINGS  # noqa: PLC0415
    from gearshift.policy.check import check_paths  # noqa: PLC0415 - keep start-up light

    result = check_paths(args.paths, kinds=KIND_SETTINGS)
    for line in result.problems:
        print(line)
    if result.unchecked:  # said even with -q: "ok" must not hide what was not looked at
        looked = ", ".join(str(p) for p in result.unchecked if p.suffix == ".yaml")
        print(f"warning: providers and blueprints named by the pools were NOT checked: no "
              f"providers file given and none found ({looked}); give it too: gearshift "
              f"validate {' '.join(str(p) for p in args.paths)} PROVIDERS.yaml",
              file=sys.stderr)
    if not result.problems and not args.quiet:
        against = (f"; references checked against {result.found_providers}"
                   if result.found_providers is not None else "")
        print(f"ok: {', '.join(str(p) for p in args.paths)} ({result.pools} pool"
              f"{'' if result.pools == 1 else 's'}{against})", file=sys.stderr)
    return 1 if result.problems else 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from gearshift.policy.schema import PoolPolicy, ProvidersFile  # noqa: PLC0415

    schemas = {"pool": PoolPolicy.model_json_schema(by_alias=True),
               "providers": ProvidersFile.model_json_schema(by_alias=True)}
    if args.kind == "all":
        out = {"$schema": "https://json-schema.org/draft/2020-12/schema",
               "title": "gearshift policy or providers file",
               "oneOf": [schemas["pool"], schemas["providers"]]}
    else:
        out = schemas[args.kind]
    print(json.dumps(out, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gearshift.demo import run_demo  # noqa: PLC0415

    return asyncio.run(run_demo(duration=args.for_, host=args.host, port=args.port,
                                verbose=args.verbose))


def _cmd_run(args: argparse.Namespace) -> int:
    from gearshift.daemon import run_daemon  # noqa: PLC0415

    return asyncio.run(run_daemon(args.config))


def _cmd_config(args: argparse.Namespace) -> int:
    if args.action == "example":
        from gearshift.config_example import example_config  # noqa: PLC0415

        sys.stdout.write(example_config())
        return 0
    if args.config is None:
        args.parser.error("config check needs --config FILE")
    from gearshift.act.providers.kind_settings import KIND_SETTINGS  # noqa: PLC0415
    from gearshift.daemon import read_token  # noqa: PLC0415
    from gearshift.policy.loader import validate_paths  # noqa: PLC0415
    from gearshift.settings import load_settings  # noqa: PLC0415

    settings = load_settings(args.config)
    read_token(settings.http.token_file)
    settings.trust.keyring()  # an unreadable or world-readable keyring is a ConfigError
    if settings.mcollective.enabled:
        settings.mcollective.secret_psk()  # readable and not empty (ConfigError otherwise)
    problems = validate_paths([settings.policies_dir, settings.providers_file],
                              kinds=KIND_SETTINGS)
    for line in problems:
        print(line)
    if not problems:
        print(f"ok: {args.config} (policies {settings.policies_dir}, providers "
              f"{settings.providers_file})", file=sys.stderr)
    return 1 if problems else 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from gearshift.agent.config import load_agent_config  # noqa: PLC0415
    from gearshift.agent.runner import Agent, run_agent  # noqa: PLC0415
    from gearshift.logs import configure  # noqa: PLC0415

    config = load_agent_config(args.config)
    configure(level=args.log_level)
    if args.once:
        message = asyncio.run(Agent(config).read_message())
        print(json.dumps(message, indent=2))
        return 0
    return asyncio.run(run_agent(config))


def _duration(text: str) -> float:
    from gearshift.durations import parse_duration  # noqa: PLC0415

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gearshift",
        description="Node autoscaler for gear-based PaaS fleets: watches gear density, "
                    "compares it with policies, adds and retires nodes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gearshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check policy and provider files",
                       description="Check policy (kind: Pool) and provider (kind: Providers) "
                                   "files, each provider kind's settings: included (no "
                                   "credential is read, nothing is connected to). Prints "
                                   "FILE:LINE:COL: message per problem; exit 1 if any, 0 if "
                                   "all valid. Directories are read for *.yaml; a folder "
                                   "without pools or an empty file is a problem. Without a "
                                   "providers file among PATHs, providers.yaml is looked for "
                                   "beside the pools (inside or next to their folder, as "
                                   "`run` lays them out); if none is found, a warning says "
                                   "that references were not checked.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of the policy files",
                       description="Print the JSON Schema, for editors that validate YAML "
                                   "while you type (yaml-language-server).")
    p.add_argument("--kind", choices=["pool", "providers", "all"], default="all")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("plan", help="show what gearshift would do now (dry run)",
                       description="Plan once and print every action with its reason and "
                                   "the placements considered. Nothing is changed.")
    p.add_argument("--config", type=Path, help="daemon config file (plan here, from facts)")
    p.add_argument("--url", help="ask a running daemon instead (its /v1/plan), e.g. "
                                 "http://127.0.0.1:9310")
    p.add_argument("--snapshot", type=Path, help="fleet snapshot JSON instead of live MQTT facts")
    p.add_argument("--wait", type=_duration, default=3.0,
                   help="how long to collect retained facts from MQTT (default 3s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--allow-empty", action="store_true",
                   help="plan even when no node facts were heard (a new, empty fleet)")
    p.set_defaults(func=cmd_plan, parser=p)

    p = sub.add_parser("simulate", help="replay a demand trace against simulated providers",
                       description="Replay a CSV demand trace (t,pool,active_gears) with the "
                                   "real planner and reconciler against simulated providers "
                                   "(each provider's simulation: block) and report.")
    p.add_argument("--policies", type=Path, required=True, help="directory of kind: Pool files")
    p.add_argument("--providers", type=Path, required=True, help="the kind: Providers file")
    p.add_argument("--trace", type=Path, required=True, help="CSV t,pool,active_gears")
    p.add_argument("--report-json", type=Path, help="write the report here too")
    p.add_argument("--plot", type=Path, help="draw demand vs capacity to this PNG")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same report)")
    p.add_argument("--tick", type=_duration, default=10.0, help="simulation step (default 10s)")
    p.add_argument("--interval", type=_duration, default=30.0,
                   help="reconcile interval (default 30s)")
    p.add_argument("--duration", type=_duration, help="simulate this long (default: trace + 1h)")
    p.add_argument("--warmup", type=_duration, default=0.0,
                   help="use the trace's first DURATION as demand history, not simulated "
                        "(predictive scaling forecasts from it)")
    p.add_argument("--no-broker-hook", action="store_true",
                   help="no simulated broker-side hook: the planner sees only the gears "
                        "that fit (default: the hook reports the unplaced gears)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every action")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="run everything embedded on 127.0.0.1",
                       description="Start an MQTT broker, a simulated fleet and providers, the "
                                   "real reconciler, metrics and a status page, all on "
                                   "127.0.0.1. Demand rises and falls; watch it scale.")
    p.add_argument("--for", dest="for_", type=_duration, metavar="SECONDS",
                   help="stop after this long and print a summary (default: until Ctrl-C)")
    p.add_argument("--host", default="127.0.0.1",
                   help="HTTP address (default 127.0.0.1; 0.0.0.0 inside a container whose "
                        "port is published)")
    p.add_argument("--port", type=int, default=9310, help="HTTP port (default 9310)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every action")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run the daemon (systemd Type=notify)",
                       description="Run the autoscaler daemon. SIGHUP reloads policies, "
                                   "SIGTERM stops gracefully.")
    p.add_argument("--config", type=Path, required=True, help="daemon config file")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show a running daemon's pools and providers",
                       description="Ask a running daemon (GET /v1/status) and print its pools "
                                   "(nodes by state, density against the band, desired size), "
                                   "providers (available, nodes, time-to-ready) and any "
                                   "refused policy edit. Exit 3 when it cannot be reached.")
    operator_options(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_status)

    for verb, what in (("pause", "stop acting on a pool (nothing is created, drained or "
                                 "retired for it) until it is resumed"),
                       ("resume", "let the planner act on a paused pool again")):
        p = sub.add_parser(verb, help=f"{verb} a pool on a running daemon",
                           description=f"{verb.capitalize()} POOL: {what}. Needs the API token "
                                       "(--token-file or $GEARSHIFT_TOKEN_FILE). Exit 1 when "
                                       "refused (token, unknown pool), 3 when unreachable.")
        p.add_argument("pool", metavar="POOL")
        operator_options(p, token=True)
        p.set_defaults(func=cmd_pause_resume)

    p = sub.add_parser("health", help="exit 0 when a running daemon's loop is alive",
                       description="GET /healthz of a running daemon: exit 0 when its "
                                   "reconcile loop is alive, 1 otherwise (unreachable too). "
                                   "For container health checks.")
    operator_options(p)
    p.add_argument("--timeout", type=_duration, default=5.0, help="give up after (default 5s)")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("config", help="print an example config, or check one",
                       description="`config example` prints every setting with its default, "
                                   "meaning and environment variable (deploy/config.example."
                                   "yaml is this output). `config check --config FILE` loads "
                                   "the settings, the token file and the policies it names.")
    p.add_argument("action", choices=["example", "check"])
    p.add_argument("--config", type=Path, help="the config file to check")
    p.set_defaults(func=_cmd_config, parser=p)

    p = sub.add_parser("agent", help="run the node agent (facts out, allowlisted commands in)",
                       description="Publish this node's facts over MQTT (retained, on change "
                                   "and every interval, last will 'offline') and run the "
                                   "allowlisted commands gearshift sends. See the agent "
                                   "config reference in gearshift.agent.")
    p.add_argument("--config", type=Path, required=True, help="agent config file (YAML)")
    p.add_argument("--once", action="store_true",
                   help="read the facts once, print the message that would be published, exit")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(func=_cmd_agent)
    add_keys_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"gearshift: the daemon refused: {exc}", file=sys.stderr)
        return 1 if exc.status < 500 else 3
    except GearshiftError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gearshift plan --json | head`
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``gearshift plan`` and ``gearshift simulate``: the planner run from the command line.

``plan`` asks it once, against a live fleet's facts (MQTT or MCollective), a snapshot file,
or a running daemon (``--url``); ``simulate`` replays a demand trace through it. Both only
print what was decided: nothing is changed. Kept apart from ``cli`` (the parser and the
exit codes) because these two carry the most of their own logic; their options are
defined with the rest in ``cli.build_parser``. Heavy imports stay inside the commands so
``gearshift --help`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

from gearshift.errors import ConfigError


def cmd_plan(args: argparse.Namespace) -> int:
    if args.url is not None:
        return _remote_plan(args)
    if args.config is None:
        args.parser.error("give --config FILE (plan here) or --url URL (ask a running daemon)")
    from gearshift import decide  # noqa: PLC0415
    from gearshift.act.providers.kind_settings import KIND_SETTINGS  # noqa: PLC0415
    from gearshift.explain import plan_to_dict, plan_to_text  # noqa: PLC0415
    from gearshift.observe.snapshot_file import load_snapshot  # noqa: PLC0415
    from gearshift.policy.loader import load_policy_set  # noqa: PLC0415
    from gearshift.settings import load_settings  # noqa: PLC0415

    settings = load_settings(args.config)
    policies = load_policy_set([settings.policies_dir, settings.providers_file],
                               kinds=KIND_SETTINGS)
    now = time.time()
    if args.snapshot is not None:
        snapshot = load_snapshot(args.snapshot, now=now,
                                 stale_after=settings.reconcile.stale_after)
    elif settings.mcollective.enabled:
        from gearshift.logs import configure  # noqa: PLC0415
        from gearshift.observe.mcollective.source import collect_mco_snapshot  # noqa: PLC0415

        configure(level="warning")  # to stderr: stdout is the plan (--json)

        snapshot = asyncio.run(collect_mco_snapshot(
            settings.mcollective, stale_after=settings.reconcile.stale_after, wait=args.wait))
    else:
        from gearshift.logs import configure  # noqa: PLC0415
        from gearshift.observe.mqtt_snapshot import collect_snapshot  # noqa: PLC0415

        configure(level="warning", fmt="console")  # to stderr: stdout is the plan
        snapshot = asyncio.run(collect_snapshot(settings, wait=args.wait))
    source = (str(args.snapshot) if args.snapshot is not None
              else "MCollective" if settings.mcollective.enabled
              else f"MQTT {settings.mqtt.host}:{settings.mqtt.port} in {args.wait:g}s")
    states = Counter(node.state.value for node in snapshot.nodes)
    print(f"heard {len(snapshot.nodes)} node(s) from {source}"
          + (f": {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}" if states else ""),
          file=sys.stderr)
    if not snapshot.nodes and not args.allow_empty:
        print("gearshift: no node facts heard: refusing to plan against an empty fleet (is "
              "this the fleet's broker and prefix? --allow-empty plans anyway)",
              file=sys.stderr)
        return 1
    plan = decide.plan(snapshot, policies, now=snapshot.taken_at)
    if args.json:
        print(json.dumps(plan_to_dict(plan), indent=2))
    else:
        print(plan_to_text(plan))
    return 0


def _remote_plan(args: argparse.Namespace) -> int:
    from gearshift.client import DaemonClient, plan_from_dict  # noqa: PLC0415
    from gearshift.explain import plan_to_text  # noqa: PLC0415

    data = DaemonClient(args.url).get("/v1/plan")
    print(json.dumps(data, indent=2) if args.json else plan_to_text(plan_from_dict(data)))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gearshift.logs import configure  # noqa: PLC0415
    from gearshift.policy.loader import load_policy_set  # noqa: PLC0415
    from gearshift.sim.runner import SimOptions, Simulation  # noqa: PLC0415
    from gearshift.sim.trace import read_trace  # noqa: PLC0415

    configure(level="warning" if not args.verbose else "info")
    policies = load_policy_set([args.policies, args.providers])
    trace = read_trace(args.trace)
    unknown = trace.pools - {p.name for p in policies.pools}
    if unknown:
        raise ConfigError([f"{args.trace}:1:1: trace names pools with no policy: "
                           f"{', '.join(sorted(unknown))}"])
    options = SimOptions(seed=args.seed, tick=args.tick, interval=args.interval,
                         duration=args.duration, warmup=args.warmup,
                         broker_hook=not args.no_broker_hook)
    started = time.perf_counter()
    result = asyncio.run(Simulation(policies, trace, options).run())
    result.report["wall_seconds"] = round(time.perf_counter() - started, 2)
    text = json.dumps(result.report, indent=2)
    if args.report_json is not None:
        args.report_json.write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.plot is not None:
        from gearshift.sim.plot import PlotSummary, plot_timeline  # noqa: PLC0415

        # a trace.csv is named by its folder (flash-crowd, scenarios/quota-spill, ...)
        scenario = args.trace.parent.name if args.trace.stem == "trace" else args.trace.stem
        assert policies.providers is not None  # simulate's --providers is required
        plot_timeline(result.timeline, args.plot,
                      summary=PlotSummary.from_report(result.report, scenario=scenario,
                                                      seed=args.seed),
                      providers=[p.name for p in policies.providers.providers])
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0

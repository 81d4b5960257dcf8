"""The operator's side of the HTTP API: what ``gearshift status/pause/resume/plan --url`` use.

Synchronous, on urllib: a CLI call is one request, and the commands start fast without
importing aiohttp. A plan is read back through the same pydantic models the daemon writes
it with (gearshift.api_models), so every action kind survives the trip.

Failures are typed (``errors.DaemonUnreachable``, ``errors.ApiError``) so the CLI maps
them to exit codes; the token is sent only as a header and never appears in an error
message.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gearshift.api_models import PlanModel
from gearshift.errors import ApiError, ConfigError, DaemonUnreachable
from gearshift.plan import Plan

DEFAULT_URL = "http://127.0.0.1:9310"


def default_url() -> str:
    return os.environ.get("GEARSHIFT_URL", DEFAULT_URL)


def read_token_file(path: Path | None) -> str:
    """The API token from ``path`` or ``$GEARSHIFT_TOKEN_FILE``; ConfigError when missing."""
    if path is None:
        env = os.environ.get("GEARSHIFT_TOKEN_FILE")
        path = Path(env) if env else None
    if path is None:
        raise ConfigError(["this command needs the API token: pass --token-file FILE or set "
                           "GEARSHIFT_TOKEN_FILE (the file named by http.token_file)"])
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{path}:1:1: cannot read the API token: {exc.strerror}"]) from exc
    if not token:
        raise ConfigError([f"{path}:1:1: the API token file is empty"])
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError([f"{path}:1:1: the API token must be one line of printable ASCII "
                           f"without spaces"])
    return token


class DaemonClient:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, f"{method} {path}: {exc.code} "
                                     f"{_error_text(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DaemonUnreachable(
                f"cannot reach the gearshift daemon at {self.url}: {reason} "
                f"(is `gearshift run` running? pass --url or set GEARSHIFT_URL)") from None
        try:
            return json.loads(answer or b"null")
        except ValueError:
            raise ApiError(502, f"{method} {path}: the answer is not JSON; is {self.url} "
                                f"a gearshift daemon?") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return json.dumps(data)[:200]


# -- rendering ------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]], *, right: set[int]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _density_state(pool: dict[str, Any]) -> str:
    density, band = pool.get("active_density"), pool.get("band", {})
    if density is None:
        return "no data"
    if density > band.get("scale_up_above", 1.0):
        return "above band"
    if density < band.get("scale_down_below", 0.0):
        return "below band"
    return "in band"


def forecast_cells(forecast: dict[str, Any]) -> list[str]:
    """A predictive pool's forecast (``/v1/status``): mode, what it reads, what it orders."""
    if forecast.get("gears") is None:
        return [forecast["mode"], "no forecast yet", "-"]
    at = str(forecast.get("at") or "")[11:16]
    extra = int(forecast["extra_nodes"])
    nodes = f"{extra} node{'s' if extra != 1 else ''}"
    return [forecast["mode"],
            f"p{round(forecast['quantile'] * 100)} {math.ceil(forecast['gears'])} gears at "
            f"{at} UTC",
            "none" if not extra else
            f"ordering {nodes}" if forecast["mode"] == "on" else f"would order {nodes}"]


def render_status(status: dict[str, Any], *, url: str) -> str:
    """``/v1/status`` as tables an SRE reads at a glance."""
    facts = "facts fresh" if status.get("facts_fresh") else "FACTS STALE"
    leader = "leader" if status.get("leader") else "NOT LEADER"
    lines = [f"gearshift at {url}: {leader}, {facts}, last reconcile "
             f"{status.get('last_reconcile') or 'never'}", ""]
    rows = []
    for name, pool in sorted(status.get("pools", {}).items()):
        nodes = pool["nodes"]
        band = pool["band"]
        density = pool["active_density"]
        flags = [f for f, on in (("DEGRADED", pool["degraded"]),
                                 ("PAUSED", pool.get("paused"))) if on]
        rows.append([name, str(nodes["active"]), str(nodes["booting"]), str(nodes["draining"]),
                     str(nodes["unknown"]), str(nodes.get("parked", 0)),
                     str(pool["desired_nodes"]),
                     f"{pool['min']}-{pool['max']}",
                     "n/a" if density is None else f"{density:.2f}",
                     f"{band['scale_down_below']:.2f}-{band['scale_up_above']:.2f}",
                     ", ".join([_density_state(pool), *flags])])
    lines += _table(["POOL", "ACTIVE", "BOOTING", "DRAINING", "UNKNOWN", "PARKED", "DESIRED",
                     "MIN-MAX", "ACTIVE-DENSITY", "BAND", "STATE"], rows,
                    right={1, 2, 3, 4, 5, 6, 8})
    if rows:
        lines += ["ACTIVE-DENSITY: the active density now (active gears / active nodes' slots); "
                  "the planner acts on the projected density (with booting nodes), named in "
                  "each reason of `gearshift plan`"]
    forecasts = [[name, *forecast_cells(pool["forecast"])]
                 for name, pool in sorted(status.get("pools", {}).items()) if pool.get("forecast")]
    if forecasts:
        lines += ["", *_table(["POOL", "PREDICTIVE", "FORECAST", "NODES AHEAD"], forecasts,
                              right=set())]
    providers = status.get("providers", {})
    if providers:
        rows = [[name, "yes" if p["available"] else "NO", str(p.get("nodes", 0)),
                 "-" if p.get("boot_time") is None else f"{p['boot_time']:.0f}s",
                 p.get("why_unavailable") or ""]
                for name, p in sorted(providers.items())]
        lines += ["", *_table(["PROVIDER", "AVAILABLE", "NODES", "BOOT", "WHY NOT"], rows,
                              right={2, 3})]
    untrusted = status.get("untrusted") or {}
    rows = [[n["identity"], n["state"].upper(), n["reason"]] for n in untrusted.get("nodes", [])]
    rows += [[r["identity"], "REFUSED", f"{r['reason']}: {r['detail']}".rstrip(": ")]
             for r in untrusted.get("refused", [])]
    if rows:
        lines += ["", "NODES THAT COUNT FOR NOTHING NOW:",
                  *_table(["NODE", "STATE", "WHY"], rows[:50], right=set())]
        if len(rows) > 50:
            lines.append(f"  ... and {len(rows) - 50} more (gearshift status --json)")
    errors = status.get("policy_errors") or []
    if errors:
        lines += ["", "POLICY ERRORS (the last reload was refused; the last good policies "
                      "are in force):", *(f"  {e}" for e in errors)]
    return "\n".join(lines)


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """A ``/v1/plan`` answer back as a ``Plan``, to print it as ``gearshift plan`` does."""
    try:
        return PlanModel.model_validate(data).to_plan()
    except ValidationError as exc:
        raise ApiError(502, f"GET /v1/plan: the answer is not a plan: {exc}") from None

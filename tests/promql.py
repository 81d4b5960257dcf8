"""Metric names in PromQL expressions (dashboard panels, alert rules), and exposition names.

Small on purpose: our expressions use selectors, aggregations with by/without, binary
operators with on/ignoring, functions, ranges and Grafana variables. Strings, label
matchers, ranges and grouping label lists are blanked first, so what is left is
identifiers: those followed by ``(`` are functions, keywords are dropped, the rest are
metric names. Its own test (test_dashboard.py) holds it to tricky cases.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2"}
_GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__[a-z_]+\}")
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]+\}|\$[A-Za-z_]\w*")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")


def grafana_to_promql(expr: str, *, values: dict[str, str] | None = None) -> str:
    """Substitute Grafana's variables so the expression is plain PromQL."""
    expr = _GRAFANA_INTERVALS.sub("5m", expr)
    values = values or {}

    def one(match: re.Match[str]) -> str:
        name = match.group(0).strip("${}").split(":")[0]
        return values.get(name, ".*")

    return _GRAFANA_VARIABLES.sub(one, expr)


def metric_names(expr: str) -> set[str]:
    text = _STRINGS.sub('""', grafana_to_promql(expr))
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def label_values_metric(query: str) -> str:
    """The selector inside a Grafana ``label_values(SELECTOR, label)`` variable query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.DOTALL)
    assert match, f"unexpected variable query: {query}"
    return match.group(1)


def exposed_names(exposition: str) -> set[str]:
    """Every series name a scrape of ``exposition`` can produce (even with no samples yet)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count",
                                                                  "created"))
    return names

"""Every metric the shipped Prometheus rules and Grafana dashboard read is really exported.

A renamed metric would otherwise break them silently: a rule over a missing series never
fires, a panel over one stays empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.live import LivePages

pytestmark = pytest.mark.slow

# Metric names in PromQL, once strings, label matchers, ranges and templates are removed.
_NAME = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_STRIP = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\$\w+')
_PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "le",
        "inf",
        "nan",
    ]
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label names in `by (...)` are not metrics)."""
    without_groupings = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    stripped = _STRIP.sub(" ", without_groupings)
    return {
        name
        for name in _NAME.findall(stripped)
        if name.lower() not in _PROMQL_WORDS and not re.fullmatch(r"\d\w*", name)
    }


def _dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def shipped_exprs(deploy_dir: Path) -> dict[str, str]:
    """`where: expr` for every rule and every dashboard panel."""
    found: dict[str, str] = {}
    rules = yaml.safe_load((deploy_dir / "prometheus" / "rtt-events.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found[f"rule {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    dashboard = json.loads((deploy_dir / "grafana" / "rtt-events.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return found


def exported_names(page: str) -> set[str]:
    """Every series name a /metrics page can carry, from its samples and its TYPE lines."""
    names = set()
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_name_parser_finds_metrics_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, consumer) (rate(rtt_worker_handler_seconds_bucket"
        '{job="x"}[$__rate_interval]))) > 0 or (sum(up{job="rtt-worker"}) or vector(0)) == 0'
    )
    assert metric_names(expr) == {"rtt_worker_handler_seconds_bucket", "up"}


def test_every_metric_the_rules_and_dashboard_read_is_exported(
    live_pages: LivePages, deploy_dir: Path
) -> None:
    exported = exported_names(live_pages.receiver) | exported_names(live_pages.worker)
    exported.add("up")  # written by Prometheus itself for every scrape target
    exprs = shipped_exprs(deploy_dir)
    assert len(exprs) > 20
    missing = {
        where: sorted(metric_names(expr) - exported)
        for where, expr in exprs.items()
        if metric_names(expr) - exported
    }
    assert missing == {}
    assert all(metric_names(expr) for expr in exprs.values())

"""The Prometheus alert rules in deploy/prometheus/: valid, unit-tested, documented, and about real metrics.

promtool (Prometheus' own checker) validates the rules and the example config and runs alerts_test.yml; it
is skipped where promtool is not installed, unless CI is set. The rest needs no promtool: every alert has a
``for``, a known severity, its annotations and a runbook section, and every metric its expressions name is
one the server exports on GET /metrics.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"warning", "critical", "page"}
RUNBOOK_URL = re.compile(r"^https://\S+/docs/runbook\.md#(?P<anchor>[a-z0-9-]+)$")
METRIC = re.compile(r"(?<![\w:])[a-zA-Z_:][\w:]*")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """The continual_* metric names (and recorded names, with a colon) an expression reads."""
    bare = STRING.sub('""', expr)  # label values and regexes are no metric names
    return {name for name in METRIC.findall(bare) if name.startswith("continual_") or ":" in name}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file (lower case, punctuation dropped, - for space)."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def exported_names(exposition: str) -> set[str]:
    """Sample names of every family in a text exposition, from its ``# TYPE`` lines (present even with no sample)."""
    names = set()
    for line in exposition.splitlines():
        typed = re.match(r"^# TYPE (\S+) (\S+)$", line)
        if not typed:
            continue
        name, kind = typed.groups()
        if kind == "counter":  # prometheus_client writes the family as `name` or `name_total`, samples `name_total`
            base = name.removesuffix("_total")
            names |= {base + "_total", base + "_created"}
        elif kind == "histogram":
            names |= {name + "_bucket", name + "_count", name + "_sum", name + "_created"}
        elif kind == "summary":
            names |= {name, name + "_count", name + "_sum", name + "_created"}
        else:
            names.add(name)
    return names


# -- promtool ---------------------------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not on PATH (CI is set): install Prometheus (Debian: apt-get install prometheus)")
        pytest.skip("promtool is not on PATH")
    return path


@pytest.mark.parametrize("args", [
    ["check", "rules", "deploy/prometheus/alerts.yml"],
    ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ["check", "config", "deploy/prometheus/prometheus.yml"],
], ids=["check-rules", "test-rules", "check-config"])
def test_promtool(args):
    result = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the rules themselves -----------------------------------------------------------------------------------------

def test_every_alert_is_complete_and_documented():
    anchors = github_anchors(RUNBOOK.read_text())
    found = alerts()
    assert found, "no alerting rule in alerts.yml"
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), "alert names repeat"
    prefixes = set()
    for rule in found:
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no for:"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not in {SEVERITIES}"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"
        url = RUNBOOK_URL.match(annotations["runbook_url"])
        assert url, f"{name}: runbook_url {annotations['runbook_url']!r} is not .../docs/runbook.md#anchor"
        assert url.group("anchor") in anchors, f"{name}: docs/runbook.md has no section #{url.group('anchor')}"
        assert name in RUNBOOK.read_text(), f"{name}: not named in docs/runbook.md"
        prefixes.add(annotations["runbook_url"].split("#")[0])
    assert len(prefixes) == 1, f"runbook links use several bases: {sorted(prefixes)}"


def test_metric_names_are_parsed():
    expr = ('sum by (job) (rate(continual_http_requests_total{status=~"5..", route!="continual_x"}[5m])) '
            '/ job:continual_ratio:rate5m '
            'and on (job) label_replace(continual_model_info == 1, "a", "$1", "b", "(.*)")')
    assert metric_names(expr) == {"continual_http_requests_total", "job:continual_ratio:rate5m",
                                  "continual_model_info"}
    older = "# TYPE continual_x counter\n# TYPE continual_h histogram\n# TYPE continual_g gauge\n"
    newer = "# TYPE continual_x_total counter\n"  # prometheus_client writes either, by version
    assert {"continual_x_total", "continual_h_bucket", "continual_h_count", "continual_g"} <= exported_names(older)
    assert "continual_x_total" in exported_names(newer)


def test_every_metric_in_the_rules_is_exported(tiny_model_dir):
    # Which metrics exist does not depend on the backend: the torch folder (3 s) rather than onnx_model_dir (an
    # ONNX export and int8 measurement, 15-20 s when this file runs alone).
    from service import create_app
    from service.app import shutdown

    app = create_app({"model_uri": str(tiny_model_dir)})
    try:
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        exported = exported_names(response.get_data(as_text=True))
    finally:
        shutdown(app)
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    missing = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            if name not in (recorded if ":" in name else exported):
                missing.setdefault(rule.get("alert") or rule.get("record"), []).append(name)
    assert not missing, f"metrics not exported by the server (GET /metrics) or recorded in alerts.yml: {missing}"

"""The status page (GET / for a browser): render() on hostile snapshots, content negotiation on the Flask test
client, and the real page under gunicorn in headless Chromium (tests/browser.py): no console errors, the three
charts drawn, the counters refreshed from /monitoring, a screenshot."""
from __future__ import annotations

import math
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from browser import load_page, require_chromium
from service import create_app
from service.app import shutdown
from service.monitoring.page import CONTENT_SECURITY_POLICY, render
from service.state import EXTENSION_KEY
from serving import gunicorn_server

HOSTILE = ["<script>alert(1)</script>", "שלום עולם", "🎉 party 👩‍👩‍👧", "line\u2028separator",
           '"quoted" & \'single\'', "x" * 300, ""]
THRESHOLDS = {"embedding_auc": 0.55, "label_psi": 0.2, "length_psi": 0.2, "confidence_drop": 0.1}
CHARTS = {"accuracy-heatmap", "forgetting", "drift"}
VOID = {"meta", "link", "br", "hr", "img", "input"}


class PageParser(HTMLParser):
    """Checks that every element closes in order, and collects the charts, scripts and visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.charts: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.charts.append(dict(attrs).get("data-chart"))
        self.scripts += tag == "script"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    assert sorted(parser.charts) == sorted(CHARTS) and parser.scripts == 1
    return parser


def check(time_: float, scores: dict) -> dict:
    return {"time": time_, "texts": 100, "scores": scores,
            "drift": {c: s is not None and s > THRESHOLDS[c] for c, s in scores.items()}}


def snapshot(rounds: int = 3, labels=("neg", "pos"), checks: int = 5, **overrides) -> dict:
    arrivals = [HOSTILE[i % len(HOSTILE)] + f" {i}" for i in range(rounds)]
    history = [check(1_700_000_000 + 30 * k, {"embedding_auc": 0.5 + 0.02 * k, "label_psi": 0.05 * k,
                                              "length_psi": None if k == 2 else 0.1, "confidence_drop": math.nan})
               for k in range(checks)]
    return {"model": {"name": labels[0], "version": "7", "round": "0003-x", "round_key": "0003-x",
                      "arrival": labels[-1], "backend": "onnx-int8"},
            "monitoring": True, "reference": {"rows": 200, "labels": list(labels),
                                              "label_share": {label: 1 / len(labels) for label in labels}},
            "window": {"texts": 40, "capacity": 500}, "interval_s": 30.0, "thresholds": THRESHOLDS,
            "latest": history[-1] if history else None, "history": history,
            "lineage": {"arrivals": arrivals,
                        "accuracy_matrix": [[0.9 - 0.03 * j if (i, j) != (1, 0) else math.nan for j in range(i + 1)]
                                            for i in range(rounds)],
                        "forgetting": [0.0] + [0.01 * i for i in range(1, rounds)]},
            "counters": {"requests": 12, "texts": 345, "errors": 1, "predictions": {label: 5 for label in labels},
                         "captured": 3, "capture_dropped": 0},
            "capture": {"enabled": True, "rate": 0.05}, **overrides}


NONE_EVERYWHERE = {"model": None, "monitoring": False, "reference": None, "window": {"texts": 0, "capacity": 500},
                   "interval_s": 30.0, "thresholds": THRESHOLDS, "latest": None, "history": [], "lineage": None,
                   "counters": {"requests": 0, "texts": 0, "errors": 0, "predictions": {}, "captured": 0,
                                "capture_dropped": 0}, "capture": {"enabled": False, "rate": 0.0}}


@pytest.mark.parametrize("case", [
    NONE_EVERYWHERE,
    dict.fromkeys(NONE_EVERYWHERE),  # every value None, even those the shape promises
    snapshot(model={"name": None, "version": None, "round": None, "round_key": None, "arrival": None,
                    "backend": "pytorch"}, latest=None, history=[]),
    snapshot(rounds=1, checks=1),
    snapshot(rounds=12, checks=240),
    snapshot(labels=tuple(HOSTILE)),
    snapshot(rounds=2, checks=3, latest=check(1_700_000_100, dict.fromkeys(THRESHOLDS))),
], ids=["none", "all-none", "no-checks", "one-round", "twelve-rounds", "hostile-labels", "unavailable-scores"])
def test_render_survives_hostile_snapshots(case):
    page = render(case)
    assert page.startswith("<!DOCTYPE html>") and "<script>alert" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    parse(page)


def test_render_shows_escaped_names_and_says_what_is_missing():
    text = "".join(parse(render(snapshot(labels=tuple(HOSTILE)))).text)
    for name in HOSTILE[:4]:
        assert name in text  # escaped in the markup, shown as written
    assert "embedding AUC" in text and "yes" in text and "onnx-int8" in text

    empty = "".join(parse(render({**NONE_EVERYWHERE, "window": {"texts": 12, "capacity": 500}})).text)
    assert "no model loaded" in empty and "no drift check yet (window: 12 of 500 texts)" in empty
    assert "has no reference (it was exported before monitoring)" in empty and "Monitoring is off" in empty


def test_index_negotiates_json_or_the_status_page(monitored_model_dir):
    app = create_app({"model_uri": str(monitored_model_dir), "compute_threads": 1, "batching": False,
                      "monitoring_interval_s": 3600, "monitoring_min_texts": 4})
    try:
        client = app.test_client()
        for headers in ({"Accept": "application/json"}, {}, {"Accept": "*/*"}):
            response = client.get("/", headers=headers)
            assert response.mimetype == "application/json", headers
            body = response.get_json()
            assert body["ready"] is True and "/monitoring" in body["endpoints"] and "/predict" in body["endpoints"]

        browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        before = client.get("/", headers=browser)
        assert before.status_code == 200 and before.content_type == "text/html; charset=utf-8"
        assert before.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY and "Accept" in before.vary
        assert "no drift check yet (window: 0 of 500 texts)" in before.get_data(as_text=True)

        client.post("/predict", json={"texts": ["good great fine", "bad awful sad", "a table", "a chair", "meh"]})
        assert app.extensions[EXTENSION_KEY].monitor.check() is not None
        page = client.get("/", headers=browser).get_data(as_text=True)
        parsed = parse(page)
        assert "<script>alert" not in page and "Latest check" in page and page.count("<polyline") >= 3
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "שלום 🎉" in "".join(parsed.text)
    finally:
        shutdown(app)


def test_the_policy_runs_the_one_script_by_its_hash_and_forbids_framing(monitored_model_dir):
    import base64
    import hashlib
    import re

    app = create_app({"model_uri": str(monitored_model_dir), "compute_threads": 1, "batching": False})
    try:
        page = app.test_client().get("/", headers={"Accept": "text/html"})
    finally:
        shutdown(app)
    policy = {part.split()[0]: part.split()[1:] for part in page.headers["Content-Security-Policy"].split("; ")}
    scripts = re.findall(r"<script>(.*?)</script>", page.get_data(as_text=True), re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert policy["script-src"] == [f"'sha256-{digest}'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert not any("unsafe" in source for sources in policy.values() if sources is not policy["style-src"]
                   for source in sources)


@pytest.fixture(scope="module")
def monitored_server(monitored_model_dir, tmp_path_factory):
    args = ["--model-uri", str(monitored_model_dir), "--workers", "1", "--threads", "4", "--set", "compute_threads=1",
            "--set", "monitoring_interval_s=1", "--set", "monitoring_min_texts=20"]
    with gunicorn_server(args, tmp_path_factory.mktemp("status-page-server")) as server:
        yield server["base"]


def predict(base: str, texts: list[str]) -> None:
    requests.post(f"{base}/predict", json={"texts": texts}, timeout=10).raise_for_status()


@pytest.mark.slow
def test_status_page_in_headless_chromium(monitored_server, tmp_path):
    require_chromium()
    base = monitored_server
    words = ["good great fine", "bad awful sad", "a table a chair", "שלום", "🎉", "<script>alert(1)</script>"]
    for start in range(0, 60, 10):
        predict(base, [f"{words[(start + i) % len(words)]} {start + i}" for i in range(10)])
    deadline = time.monotonic() + 30
    while len((state := requests.get(f"{base}/monitoring", timeout=10).json())["history"]) < 2:  # lines, not dots
        assert time.monotonic() < deadline, f"not two drift checks after 30 s: window {state['window']}"
        time.sleep(0.5)
    shown = state["counters"]["texts"]

    screenshot = tmp_path / "status_page.png"
    result = load_page(f"{base}/", screenshot, on_load=lambda: predict(base, ["five", "more", "texts", "a", "b"]),
                       wait_for=f"document.querySelector('[data-counter=texts]').textContent === '{shown + 5}'",
                       evaluate={"updated": "document.querySelector('[data-updated]').textContent"})

    assert result.console_errors == []
    assert result.title.startswith("continual model server")
    assert set(result.chart_sizes) == CHARTS
    for chart, (width, height) in result.chart_sizes.items():
        assert width > 50 and height > 50, (chart, width, height)
    # drawn: the heatmap's 6 cells of 3 rounds, the lines and markers (more than the one box and note of "no data")
    assert result.chart_elements["accuracy-heatmap"] >= 6 and result.chart_elements["forgetting"] >= 4
    assert result.chart_elements["drift"] >= 6 and state["latest"] is not None
    assert result.values["updated"].startswith(", last at")  # the counters script ran, without an error
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("CONTINUAL_SCREENSHOT_DIR"):
        target = Path(os.environ["CONTINUAL_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "status_page.png")

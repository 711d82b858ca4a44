"""`continual ui`: reports/compare.html draws every lineage's forgetting and accuracy against round from the real
SQLite store, opens in headless Chromium with the forgetting chart on the first screen, and `mlflow ui` starts on
the workspace's store beside it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from browser import load_page, require_chromium
from continual.cli import main
from continual.params import load_params
from continual.registry.connect import connect
from continual.registry.lineage import log_round
from continual.registry.tags import KIND_TAG
from continual.cli.ui import without_credentials
from round_folders import NAMES, ROWS, write_stream
from serving import free_port

OTHER_ROWS = [[0.82], [0.80, 0.81], [0.79, 0.80, 0.83]]  # a second strategy that forgets less


@pytest.fixture(scope="module")
def two_lineages(tmp_path_factory, tiny_model_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        root = tmp_path_factory.mktemp("ws")
        for strategy, rows in (("replay+ewc", ROWS), ("adapt", OTHER_ROWS)):
            ws = write_stream(root, tiny_model_dir, rows, NAMES, strategy=strategy)
            params = load_params(ws.params_file)
            params["tracking"]["register_models"] = False
            for key in ws.stream():
                log_round(ws, key, params)
        yield ws


def test_the_page_draws_every_lineage_from_the_store(two_lineages):
    ws = two_lineages
    assert main(["-C", str(ws.root), "ui", "--no-server", "--no-browser"]) == 0
    page = (ws.reports_dir / "compare.html").read_text()
    client, experiment_id = connect(ws, load_params(ws.params_file))
    lineages = client.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'lineage'")
    assert len(lineages) == 2
    for run in lineages:
        assert run.info.run_name in page
    # forgetting after round 3: replay+ewc (0.08 + 0.03) / 2 = 0.055, adapt (0.03 + 0.01) / 2 = 0.020
    assert "<td>0.055</td>" in page and "<td>0.020</td>" in page
    assert page.count('data-chart="forgetting-avg"') == 1 and page.count("<polyline") >= 4


def test_credentials_never_reach_the_page():
    assert without_credentials("https://alice:s3cret@mlflow.example:8443/") == "https://mlflow.example:8443"
    assert without_credentials("http://[::1]:5000") == "http://[::1]:5000"


@pytest.mark.slow
def test_the_first_screen_shows_forgetting_for_every_lineage(two_lineages, tmp_path):
    require_chromium()
    ws = two_lineages
    assert main(["-C", str(ws.root), "ui", "--no-server", "--no-browser"]) == 0
    screenshot = tmp_path / "compare.png"
    result = load_page((ws.reports_dir / "compare.html").as_uri(), screenshot, width=1280, height=800, evaluate={
        "forgetting_bottom": "document.querySelector('svg[data-chart=forgetting-avg]').getBoundingClientRect().bottom",
        "legend": "Array.from(document.querySelectorAll('ul.legend li')).map(li => li.textContent.trim())"})
    assert result.console_errors == []
    assert result.title == "continual: forgetting by lineage"
    assert set(result.chart_sizes) == {"forgetting-avg", "avg_acc", "wall_seconds"}
    width, height = result.chart_sizes["forgetting-avg"]
    assert width > 300 and height > 100
    assert 0 < result.values["forgetting_bottom"] <= 800  # on the first screen, no scrolling
    assert len(result.values["legend"]) == 2
    assert result.chart_elements["forgetting-avg"] >= 8  # two lines of two points each, axes and labels
    if os.environ.get("CONTINUAL_SCREENSHOT_DIR"):
        target = Path(os.environ["CONTINUAL_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "compare.png")


@pytest.mark.slow
def test_ui_starts_mlflow_on_the_workspace_store(two_lineages):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "continual.cli", "-C", str(two_lineages.root), "ui",
                                "--port", str(port), "--no-browser"], stdout=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, start_new_session=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("forgetting against round, 2 lineage(s): file://")
        assert lines[1].strip() == f"MLflow: http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        found = requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10", timeout=10)
        while time.monotonic() < deadline and not found.ok:
            time.sleep(0.5)
        names = [e["name"] for e in found.json()["experiments"]]
        assert load_params(two_lineages.params_file)["tracking"]["experiment"] in names
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)

"""The drift monitor: statistics, the reference a round stores, the window and its gauges, refused settings, the
`continual drift` command, and two gunicorn workers exporting drift gauges in multiprocess mode (with a full disk
under the capture folder)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers import TINY_ROWS
from serving import gunicorn_server
from service.monitoring.reference import Reference
from service.monitoring.scores import domain_auc, length_psi, psi

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ["a\u2028b", "x\u0085y", "\u05e9\u05dc\u05d5\u05dd \U0001f600", "nul\x00byte", "w " * 3000]


def test_statistics_tell_same_from_shifted():
    rng = np.random.default_rng(0)
    reference, same, shifted = rng.normal(size=(600, 32)), rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    shifted[:, 0] += 2.0  # one direction: a Bayes-optimal AUC of 0.92
    assert domain_auc(reference, same) < 0.55 < 0.8 < domain_auc(reference, shifted)
    assert psi(np.array([50, 50]), np.array([50, 50])) == pytest.approx(0.0)
    assert psi(np.array([90, 10]), np.array([10, 90])) > 1.0
    lengths = rng.integers(20, 200, size=1000)
    assert length_psi(lengths, rng.integers(20, 200, size=500)) < 0.1 < length_psi(lengths, lengths * 10)


def test_reference_round_trip(monitored_model_dir):
    reference = Reference.load(monitored_model_dir)
    assert reference.labels == ["neg", "neu", "pos"]
    assert reference.embeddings.shape == (len(TINY_ROWS), 32)  # every held-out row: fewer than 1000
    assert reference.train_label_counts.tolist() == [6, 6, 6]
    assert len(reference.heldout_confidence) == len(reference.heldout_predicted) == len(reference.embeddings)
    assert reference.embeddings_int8.shape == reference.embeddings.shape  # the int8 graph's own, for int8 servers
    assert reference.embeddings_for("onnx-int8") is reference.embeddings_int8
    assert reference.embeddings_for("onnx") is reference.embeddings
    lineage = reference.lineage()
    assert lineage["arrivals"] == ["tweets", "<script>alert(1)</script>", "שלום 🎉"]
    assert lineage["accuracy_matrix"][1] == [pytest.approx(0.8), pytest.approx(0.85)]
    assert lineage["forgetting"] == [0.0, pytest.approx(0.1), pytest.approx(0.1)]
    assert Reference.load(monitored_model_dir.parent) is None  # no reference: None, not an error


def app_for(folder: Path, **config):
    from service import create_app

    return create_app({"model_uri": str(folder), "monitoring_min_texts": 10, "monitoring_window": 40, **config})


@pytest.mark.parametrize("backend", ["onnx-int8", "torch"])
def test_window_checks_and_gauges(monitored_model_dir, backend, caplog):
    from service.app import shutdown

    app = app_for(monitored_model_dir, backend=backend)
    client, state = app.test_client(), app.extensions["continual"]
    try:
        assert state.monitor.check() is None  # an empty window is not scored
        secret = "my secret text 12345"
        for _ in range(12):  # 120 texts through a window of 40: it stays bounded
            assert client.post("/predict", json={"texts": [r["text"] for r in TINY_ROWS[:9]] + [secret]}).status_code == 200
        assert client.post("/predict", json={"texts": HOSTILE}).status_code == 200
        result = state.monitor.check()
        assert result["texts"] == 40 and set(result["scores"]) == {"embedding_auc", "label_psi", "length_psi",
                                                                   "confidence_drop"}
        assert all(isinstance(v, float) for v in result["scores"].values())  # both backends give embeddings
        snapshot = client.get("/monitoring").get_json()
        assert snapshot["latest"]["scores"] == pytest.approx(result["scores"])
        assert snapshot["window"] == {"texts": 40, "capacity": 40, "workers": 1} and snapshot["counters"]["texts"] == 125
        assert len(snapshot["lineage"]["arrivals"]) == 3
        exposition = client.get("/metrics").get_data(as_text=True)
        for check in result["scores"]:
            assert f'continual_drift_score{{check="{check}",model_name="classifier",model_version=""}}' in exposition
        assert "continual_predictions_total{" in exposition and "continual_prediction_confidence_bucket{" in exposition
        assert secret not in exposition and secret not in caplog.text  # raw texts never reach metrics or logs
    finally:
        shutdown(app)


def test_a_model_without_reference_serves_and_scores_nothing(onnx_model_dir):
    from service.app import shutdown

    app = app_for(onnx_model_dir)
    try:
        client = app.test_client()
        for _ in range(3):
            assert client.post("/predict", json={"texts": [r["text"] for r in TINY_ROWS[:6]]}).status_code == 200
        result = app.extensions["continual"].monitor.check()
        assert result["scores"] == dict.fromkeys(result["scores"]) and not any(result["drift"].values())
        assert client.get("/monitoring").get_json()["reference"] is None
    finally:
        shutdown(app)


@pytest.mark.parametrize("config, message", [
    ({"capture_rate": 1.5}, "capture_rate"), ({"capture_rate": "lots"}, "capture_rate"),
    ({"capture_rate": 0.5}, "capture_dir"), ({"capture_rate": 0.5, "capture_max_rows": 0}, "max_rows"),
    ({"monitoring_window": 1}, "monitoring_window"), ({"monitoring_min_texts": 600}, "monitoring_min_texts"),
    ({"monitoring_interval_s": 0}, "monitoring_interval_s"),
])
def test_bad_monitoring_settings_are_refused_at_start(config, message, tmp_path):
    from service.config import load_config

    with pytest.raises(ValueError, match=message):
        load_config({"model_uri": str(tmp_path), **config}, environ={})
    refused = subprocess.run([sys.executable, "-m", "service.serve", "--model-uri", str(tmp_path),
                              *[arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr


def test_continual_drift_scores_a_file_and_writes_a_report(monitored_model_dir, tmp_path):
    import json

    from continual.cli import main
    from continual.workspace.create import create_workspace

    ws = create_workspace(tmp_path / "ws")
    texts = tmp_path / "capture.jsonl"
    hostile = [*HOSTILE, "article " * 2500]  # and a 20,000-character text: scored here, no server limit applies
    texts.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                             for t in [r["text"] for r in TINY_ROWS] + hostile), encoding="utf-8")
    out = tmp_path / "drift.html"
    assert main(["--workspace", str(ws.root), "drift", "--texts", str(texts), "--model-uri", str(monitored_model_dir),
                 "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert 'data-chart="drift"' in page and "embedding" in page
    assert f"over {len(TINY_ROWS) + len(hostile)} texts" in page  # every line one text: U+2028 and U+0085 split none


@pytest.mark.slow
def test_two_gunicorn_workers_export_drift_gauges_and_a_full_disk_drops_captures(monitored_model_dir, tmp_path):
    """Multiprocess mode: the drift gauges reach the merged /metrics from the one worker that scores every worker's
    window (service.monitoring.shared_window), not once per worker. The capture file is /dev/full:
    every write fails with ENOSPC, the server keeps answering and counts the dropped captures."""
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "capture.jsonl").symlink_to("/dev/full")
    args = ["--model-uri", str(monitored_model_dir), "--workers", "2", "--threads", "2", "--set", "compute_threads=1",
            "--set", "monitoring_interval_s=0.5", "--set", "monitoring_min_texts=10", "--set", "capture_rate=1",
            "--set", "capture_anonymous=true", "--set", f"capture_dir={captures}"]
    with gunicorn_server(args, tmp_path) as server:
        base, log = server["base"], server["log"]
        texts = [r["text"] for r in TINY_ROWS[:10]]
        deadline, pids = time.monotonic() + 60, set()
        while time.monotonic() < deadline:
            for _ in range(10):  # new connections: both workers get traffic
                assert requests.post(f"{base}/predict", json={"texts": texts}, timeout=10).status_code == 200
            exposition = requests.get(f"{base}/metrics", timeout=10).text
            pids = {line.split('pid="')[1].split('"')[0] for line in exposition.splitlines()
                    if line.startswith('continual_drift_score{check="embedding_auc"')}
            if pids:
                break
            time.sleep(0.5)
        assert len(pids) == 1, f"drift gauges of {len(pids)} worker(s):\n{log.read_text()[-2000:]}"
        dropped = [line for line in exposition.splitlines() if line.startswith("continual_capture_dropped_total{")]
        assert dropped and 'reason="disk"' in dropped[0] and float(dropped[0].split()[-1]) > 0
        assert "texts" in requests.get(f"{base}/monitoring", timeout=10).json()["window"]

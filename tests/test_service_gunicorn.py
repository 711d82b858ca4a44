"""The model server under real gunicorn on 127.0.0.1, serving a tiny model from a sqlite MLflow registry on its
int8 ONNX backend (the gate passed it): both inference APIs, tritonclient, schemathesis, and a hot swap under
concurrent requests."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers import export_tiny
from serving import MODEL_NAME, gunicorn_server, make_registry, move_alias, register_tiny_model
from service.registry_tags import INT8_GATE_TAG

pytestmark = pytest.mark.slow

TOKEN = "gunicorn-test-token"
MAX_TEXTS = 16


@pytest.fixture(scope="module")
def registry(tmp_path_factory, onnx_model_dir):
    uri = make_registry(tmp_path_factory.mktemp("gunicorn-registry"))
    register_tiny_model(uri, onnx_model_dir, 1, "tweets", tags={INT8_GATE_TAG: "passed: test fixture"})
    return uri


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    args = ["--registered-model", MODEL_NAME, "--tracking-uri", registry, "--poll-seconds", "1", "--workers", "1",
            "--threads", "4", "--set", "compute_threads=1", "--set", f"max_texts={MAX_TEXTS}",
            "--set", "max_text_chars=2000", "--set", "max_body_bytes=262144", "--set", "max_length=64"]
    # max_body_bytes admits any schema-valid body (16 texts x 2,000 chars x 6 bytes when \u-escaped), so
    # schemathesis only meets 413 where the schema says so.
    with gunicorn_server(args, tmp_path_factory.mktemp("gunicorn"), {"CONTINUAL_ADMIN_TOKEN": TOKEN}) as running:
        yield {**running, "registry": registry}


def test_predict_and_v2_infer(server):
    base = server["base"]
    body = requests.post(f"{base}/predict", json={"texts": ["lovely", "awful", "meh"]}, timeout=10).json()
    assert body["model"]["version"] == "1" and body["model"]["round_key"] == "0001-tweets"
    assert [len(p["probabilities"]) for p in body["predictions"]] == [3, 3, 3]
    assert {p["label"] for p in body["predictions"]} <= {"neg", "neu", "pos"}
    infer = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    result = requests.post(f"{base}/v2/models/{MODEL_NAME}/infer", json=infer, timeout=10).json()
    outputs = {o["name"]: o for o in result["outputs"]}
    assert result["model_version"] == "1"
    assert outputs["probabilities"]["shape"] == [2, 3] and len(outputs["probabilities"]["data"]) == 6
    assert set(outputs["label"]["data"]) <= {"neg", "neu", "pos"}
    metadata = requests.get(f"{base}/v2/models/{MODEL_NAME}", timeout=10).json()
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["backend"]["name"] == "onnx-int8"
    assert "passed: test fixture" in metadata["backend"]["reason"]
    metrics = requests.get(f"{base}/metrics", timeout=10).text.splitlines()
    assert any(line.startswith("continual_model_backend{") and 'backend="onnx-int8"' in line and line.endswith(" 1.0")
               for line in metrics)


def test_refusals_keep_the_connection_usable(server):
    """Each refusal is JSON, and the next request on the same keep-alive connection is answered at once
    (service.body_drain: gunicorn 26 otherwise stalls it for the keep-alive timeout, then drops it)."""
    base = server["base"]
    session = requests.Session()
    refusals = [
        ("POST", "/predict", b"x" * 300_000, 413),
        ("POST", "/predict", b"{", 400),
        ("PUT", f"/v2/models/{MODEL_NAME}/infer", b'{"inputs": []}', 405),
        ("POST", "/v2/models/other/infer", b'{"inputs": []}', 404),
        ("POST", "/no/such/route", b'{"texts": ["a"]}', 404),
    ]
    for method, path, body, status in refusals:
        refused = session.request(method, f"{base}{path}", data=body, timeout=10)
        assert refused.status_code == status and "error" in refused.json()
        started = time.monotonic()
        assert session.get(f"{base}/v2/health/live", timeout=10).status_code == 200
        assert time.monotonic() - started < 1.0, f"request after {method} {path} stalled"


def test_tritonclient(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server['port']}", network_timeout=10.0)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL_NAME)
        assert not client.is_model_ready("no-such-model")
        metadata = client.get_model_metadata(MODEL_NAME)
        assert metadata["versions"] == ["1"]
        assert metadata["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
        texts = np.array(["a fine day".encode(), "névér again".encode(), b"ok"], dtype=np.object_)
        for binary in (True, False):  # tritonclient's default binary tensor extension, and plain JSON
            tensor = triton.InferInput("text", [3], "BYTES")
            tensor.set_data_from_numpy(texts, binary_data=binary)
            result = client.infer(MODEL_NAME, [tensor], outputs=[
                triton.InferRequestedOutput("label", binary_data=False),
                triton.InferRequestedOutput("probabilities", binary_data=False)])
            labels = result.as_numpy("label")
            probabilities = result.as_numpy("probabilities")
            assert labels.shape == (3,) and {label.decode() if isinstance(label, bytes) else label
                                            for label in labels} <= {"neg", "neu", "pos"}
            assert probabilities.shape == (3, 3)
            assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    finally:
        client.close()


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    # Every check but positive_data_acceptance: the schema cannot say that shape[0] must equal the
    # number of texts in data, so schema-valid V2 requests with a mismatched shape are rightly 422.
    # No admin token: forced reloads would spend the time budget loading models (test_service.py covers them).
    command = [str(st), "run", f"{server['base']}/openapi.json", "--checks", "all",
               "--exclude-checks", "positive_data_acceptance",
               "--max-examples", "10", "--seed", "1", "--workers", "1", "--generation-database", "none",
               "--phases", "examples,coverage,fuzzing", "--request-timeout", "10",
               "--no-color", "--report-dir", str(tmp_path)]
    # No --max-time: with it, fuzzing repeats until the budget is spent; the timeout below is the bound.
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_hot_swap_under_concurrent_requests(server, tmp_path):
    """Requests keep flowing while the alias moves to a four-label model: none fails, each is answered
    wholly by one model, and after the swap every answer and /metrics name the new version."""
    from continual.model.encoder import make_tiny_model

    base = server["base"]
    stop = threading.Event()
    answers: list[list[tuple[int, str | None, int]]] = [[] for _ in range(3)]
    # Registered before the load starts: the swap must land while the clients are still sending.
    four_labels = export_tiny(make_tiny_model(tmp_path / "v2", ["neg", "neu", "pos", "mixed"], seed=1))
    version = register_tiny_model(server["registry"], four_labels, 2, "movies", alias=None,
                                  tags={INT8_GATE_TAG: "passed: test fixture"})

    def fire(slot: int) -> None:
        session = requests.Session()
        give_up = time.monotonic() + 120  # bounded even if stop never came
        while time.monotonic() < give_up:
            if stop.is_set():
                return
            response = session.post(f"{base}/predict", json={"texts": ["swap me", "and me"]}, timeout=15)
            if response.status_code != 200:
                answers[slot].append((response.status_code, None, 0))
                continue
            body = response.json()
            widths = {len(p["probabilities"]) for p in body["predictions"]}
            answers[slot].append((200, body["model"]["version"], widths.pop() if len(widths) == 1 else -1))

    threads = [threading.Thread(target=fire, args=(slot,), daemon=True) for slot in range(len(answers))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the clients are on the old model
        move_alias(server["registry"], version)
        reload = requests.post(f"{base}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert reload.status_code == 200, reload.text  # swapped, or the poll got there first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(a and a[-1][1] == "2" for a in answers):
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    everything = [answer for slot in answers for answer in slot]
    assert everything and all(status == 200 for status, _, _ in everything), everything[:5]
    assert {(version, width) for _, version, width in everything} == {("1", 3), ("2", 4)}
    for slot in answers:  # per client, once on the new model never back on the old
        versions = [version for _, version, _ in slot]
        assert versions[-1] == "2" and "1" not in versions[versions.index("2"):]
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert any(line.startswith("continual_model_version{") and line.endswith(" 2.0") for line in metrics.splitlines())
    assert 'version="2"} 1.0' in metrics
    metadata = requests.get(f"{base}/v2/models/{MODEL_NAME}", timeout=10).json()
    assert metadata["versions"] == ["2"] and metadata["outputs"][1]["shape"] == [-1, 4]


def test_starts_without_a_model_and_picks_up_the_first(onnx_model_dir, tmp_path):
    """A registry that does not exist yet (a workspace with no round): 2 workers start (the master creates the
    SQLite database once; racing workers broke each other's migration), every public answer is a JSON 503 or
    an honest status without SQL, paths or tracebacks, and the first registered champion is served by both
    workers without a restart, with no poll configured."""
    folder, server_folder = tmp_path / "registry", tmp_path / "server"
    folder.mkdir()
    server_folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = ["--registered-model", MODEL_NAME, "--tracking-uri", uri, "--workers", "2", "--threads", "2",
            "--set", "compute_threads=1", "--set", "monitoring=false"]
    with gunicorn_server(args, server_folder, ready_path="/v2/health/live") as server:
        base = server["base"]
        infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        answers = [requests.post(f"{base}/predict", json={"texts": ["a"]}, timeout=10),
                   requests.post(f"{base}/v2/models/{MODEL_NAME}/infer", json=infer, timeout=10),
                   requests.get(f"{base}/v2/models/{MODEL_NAME}/ready", timeout=10),
                   requests.get(f"{base}/v2/health/ready", timeout=10),
                   requests.post(f"{base}/v2/repository/index", timeout=10)]
        assert [answer.status_code for answer in answers] == [503, 503, 503, 503, 200], [a.text for a in answers]
        assert "no model yet" in answers[0].json()["error"]
        assert answers[4].json()[0]["state"] == "UNAVAILABLE" and "no model yet" in answers[4].json()[0]["reason"]
        leaks = ("select ", "sqlite", "alembic", "traceback", str(tmp_path).lower())
        for answer in answers + [requests.get(f"{base}/", timeout=10)]:  # the status page too
            assert not any(leak in answer.text.lower() for leak in leaks), answer.text

        register_tiny_model(uri, onnx_model_dir, 1, "tweets", tags={INT8_GATE_TAG: "passed: test fixture"})
        deadline, served = time.monotonic() + 60, 0
        while served < 10 and time.monotonic() < deadline:  # ten in a row, each on a new connection: both workers
            answer = requests.post(f"{base}/predict", json={"texts": ["a"]}, timeout=10)
            served = served + 1 if answer.status_code == 200 else 0
            time.sleep(0.1)
        assert served == 10 and answer.json()["model"]["version"] == "1"
        log = server["log"].read_text()
        assert "Traceback" not in log and "Worker failed to boot" not in log
        assert log.count("creating the MLflow database") == 1

"""Several models (streams) in one server: three registered models under one gunicorn (2 workers), each by its V2
name, the repository index, a hot swap of one under load on the other two; in process: a model that fails to load
is UNAVAILABLE while the others serve, /predict's model field, /monitoring?model=, and `--model` refused at start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from serving import gunicorn_server, make_registry, move_alias, register_tiny_model
from service import create_app
from service.app import shutdown
from service.config import load_config
from service.registry_tags import INT8_GATE_TAG

REPO = Path(__file__).resolve().parents[1]
STREAMS = ("alpha", "beta", "gamma")
PASSED = {INT8_GATE_TAG: "passed: test fixture"}


def infer_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, onnx_model_dir):
    """alpha, beta, gamma: one registered model each, version 1 the champion; alpha has a version 2 waiting."""
    uri = make_registry(tmp_path_factory.mktemp("streams-registry"))
    for name in STREAMS:
        register_tiny_model(uri, onnx_model_dir, 1, "tweets", name=name, tags=PASSED)
    register_tiny_model(uri, onnx_model_dir, 2, "movies", name="alpha", alias=None, tags=PASSED)
    return uri


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    args = [arg for name in STREAMS for arg in ("--model", f"{name}=models:/{name}@champion")]
    args += ["--tracking-uri", registry, "--poll-seconds", "1", "--workers", "2", "--threads", "2",
             "--set", "compute_threads=1"]
    with gunicorn_server(args, tmp_path_factory.mktemp("streams-server")) as running:
        yield {**running, "registry": registry}


@pytest.mark.slow
def test_the_repository_index_lists_every_stream_ready(server):
    base = server["base"]
    index = requests.post(f"{base}/v2/repository/index", timeout=10)
    assert index.status_code == 200
    assert index.json() == [{"name": name, "version": "1", "state": "READY", "reason": ""} for name in STREAMS]
    assert requests.post(f"{base}/v2/repository/index", json={"ready": True}, timeout=10).json() == index.json()
    refused = requests.get(f"{base}/v2/repository/index", timeout=10)
    assert refused.status_code == 405 and "error" in refused.json()
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server['port']}", network_timeout=10.0)
    try:
        assert [entry["name"] for entry in client.get_model_repository_index()] == list(STREAMS)
        assert all(client.is_model_ready(name) for name in STREAMS) and not client.is_model_ready("delta")
    finally:
        client.close()


@pytest.mark.slow
def test_each_stream_answers_by_name_and_unknown_names_are_404(server):
    base = server["base"]
    for name in STREAMS:
        result = requests.post(f"{base}/v2/models/{name}/infer", json=infer_body(["good", "bad"]), timeout=10)
        assert result.status_code == 200 and result.json()["model_name"] == name
        assert result.json()["model_version"] == "1"
        assert requests.get(f"{base}/v2/models/{name}", timeout=10).json()["backend"]["name"] == "onnx-int8"
        assert requests.get(f"{base}/v2/models/{name}/ready", timeout=10).status_code == 200
        body = requests.post(f"{base}/predict", json={"texts": ["fine"], "model": name}, timeout=10).json()
        assert (body["model_name"], body["model"]["name"], body["model"]["version"]) == (name, name, "1")
    for method, path, body in [("POST", "/v2/models/delta/infer", infer_body(["x"])), ("GET", "/v2/models/delta", None),
                               ("GET", "/v2/models/delta/ready", None),
                               ("POST", "/predict", {"texts": ["x"], "model": "delta"})]:
        unknown = requests.request(method, f"{base}{path}", json=body, timeout=10)
        assert unknown.status_code == 404 and "'alpha', 'beta', 'gamma'" in unknown.json()["error"], path
    unnamed = requests.post(f"{base}/predict", json={"texts": ["x"]}, timeout=10)
    assert unnamed.status_code == 422 and "several models" in unnamed.json()["error"]
    assert "'gamma'" in unnamed.json()["error"]


@pytest.mark.slow
def test_a_hot_swap_of_one_stream_fails_no_request_of_the_others(server):
    """alpha's alias moves to version 2 while 4 clients load beta and gamma (V2 and /predict): every one of their
    requests is answered by their own version 1, and alpha reports version 2 on both workers."""
    base, stop = server["base"], threading.Event()
    answers: list[list[tuple[int, str | None, str | None]]] = [[] for _ in range(4)]

    def fire(slot: int) -> None:
        name, session, give_up = ("beta", "gamma")[slot % 2], requests.Session(), time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < give_up:
            try:
                if slot < 2:
                    response = session.post(f"{base}/v2/models/{name}/infer", json=infer_body(["a", "b"]), timeout=15)
                    got = response.json() if response.status_code == 200 else {}
                    answers[slot].append((response.status_code, got.get("model_name"), got.get("model_version")))
                else:
                    response = session.post(f"{base}/predict", json={"texts": ["a"], "model": name}, timeout=15)
                    got = response.json() if response.status_code == 200 else {"model": {}}
                    answers[slot].append((response.status_code, got.get("model_name"), got["model"].get("version")))
            except requests.RequestException as error:
                answers[slot].append((0, type(error).__name__, None))

    def alpha_version() -> str:  # a new connection each time: either worker may answer
        answer = requests.post(f"{base}/v2/models/alpha/infer", json=infer_body(["x"]), timeout=10)
        return answer.json()["model_version"]

    threads = [threading.Thread(target=fire, args=(slot,), daemon=True) for slot in range(len(answers))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        move_alias(server["registry"], "2", name="alpha")
        deadline, in_a_row = time.monotonic() + 30, 0
        while in_a_row < 10 and time.monotonic() < deadline:
            in_a_row = in_a_row + 1 if alpha_version() == "2" else 0
        assert in_a_row == 10, "alpha did not swap to version 2 on both workers in 30 s"
        time.sleep(1.0)  # load continues after the swap
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        move_alias(server["registry"], "1", name="alpha")

    for slot, slot_answers in enumerate(answers):
        name = ("beta", "gamma")[slot % 2]
        assert len(slot_answers) > 10, slot_answers
        assert set(slot_answers) == {(200, name, "1")}, [a for a in slot_answers if a != (200, name, "1")][:5]
    index = {entry["name"]: entry for entry in requests.post(f"{base}/v2/repository/index", timeout=10).json()}
    assert index["alpha"]["version"] in {"1", "2"} and index["beta"]["version"] == index["gamma"]["version"] == "1"
    metrics = requests.get(f"{base}/metrics", timeout=10).text.splitlines()
    versions = {line.split('model_name="')[1].split('"')[0] for line in metrics
                if line.startswith("continual_model_version{") and line.endswith(" 1.0")}
    assert {"beta", "gamma"} <= versions
    assert any(line.startswith("continual_model_info{") and 'model_name="alpha"' in line and 'version="2"' in line
               and line.endswith(" 1.0") for line in metrics)


# -- in process -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half_broken(onnx_model_dir, monitored_model_dir, tmp_path_factory):
    """Two good models and one whose folder is not a model."""
    broken = tmp_path_factory.mktemp("broken")
    (broken / "config.json").write_text("{not json")
    app = create_app({"models": {"good": str(monitored_model_dir), "broken": str(broken), "spare": str(onnx_model_dir)},
                      "compute_threads": 1, "admin_token": "t", "monitoring_min_texts": 4})
    yield app
    shutdown(app)


def test_a_stream_that_fails_to_load_is_unavailable_while_the_others_serve(half_broken):
    client = half_broken.test_client()
    index = client.post("/v2/repository/index").get_json()
    assert [(e["name"], e["state"]) for e in index] == [("good", "READY"), ("broken", "UNAVAILABLE"),
                                                          ("spare", "READY")]
    assert index[1]["reason"] and index[1]["version"] == ""
    assert client.post("/v2/repository/index", json={"ready": True}).get_json() == [index[0], index[2]]
    assert client.post("/v2/repository/index", json={"ready": "yes"}).status_code == 422
    assert client.get("/v2/health/ready").status_code == 200  # one model's failure keeps the others routable
    for response in (client.post("/v2/models/broken/infer", json=infer_body(["x"])),
                     client.get("/v2/models/broken/ready"),
                     client.post("/predict", json={"texts": ["x"], "model": "broken"})):
        assert response.status_code == 503 and "not loaded" in response.get_json()["error"]
    assert client.post("/v2/models/good/infer", json=infer_body(["x"])).status_code == 200
    auth = {"Authorization": "Bearer t"}
    assert client.post("/admin/reload?model=broken", headers=auth).status_code == 502
    assert client.post("/admin/reload?model=good", headers=auth).get_json()["swapped"] is False
    every = client.post("/admin/reload", headers=auth)
    assert every.status_code == 502 and set(every.get_json()["models"]) == {"good", "broken", "spare"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'continual_model_version{model_name="broken"} -1.0' in metrics
    assert 'continual_model_reload_failures_total{model_name="broken"} 3.0' in metrics
    assert 'continual_model_reload_failures_total{model_name="good"} 0.0' in metrics


def test_each_stream_has_its_own_monitor_and_page(half_broken):
    client = half_broken.test_client()
    texts = ["good great fine", "bad awful sad", "a table", "a chair", "meh"]
    assert client.post("/predict", json={"texts": texts, "model": "good"}).status_code == 200
    good = client.get("/monitoring?model=good").get_json()
    assert good["model_name"] == "good" and good["window"]["texts"] >= 5
    assert good["models"] == ["good", "broken", "spare"]
    assert client.get("/monitoring").get_json()["model_name"] == "good"  # the first by default
    assert client.get("/monitoring?model=spare").get_json()["window"]["texts"] == 0
    assert client.get("/monitoring?model=broken").get_json()["model"] is None
    assert client.get("/monitoring?model=delta").status_code == 404
    page = client.get("/?model=spare", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert '<a href="?model=good">' in page and "<strong><bdi>spare</bdi></strong>" in page
    about = client.get("/").get_json()
    assert about["model_name"] == "good" and [m["name"] for m in about["models"]] == ["good", "broken", "spare"]
    document = client.get("/openapi.json").get_json()
    assert document["components"]["parameters"]["ModelName"]["schema"]["enum"] == ["good", "broken", "spare"]


def test_one_model_answers_predict_with_or_without_its_name(onnx_model_dir):
    app = create_app({"model_uri": str(onnx_model_dir), "compute_threads": 1, "batching": False})
    try:
        client = app.test_client()
        assert client.post("/predict", json={"texts": ["x"]}).get_json()["model_name"] == "classifier"
        assert client.post("/predict", json={"texts": ["x"], "model": "classifier"}).status_code == 200
        assert client.post("/predict", json={"texts": ["x"], "model": "other"}).status_code == 404
        assert client.post("/predict", json={"texts": ["x"], "model": 3}).status_code == 422
        assert client.post("/predict", json={"texts": ["x"], "model": None}).status_code == 422
        assert [e["name"] for e in client.post("/v2/repository/index").get_json()] == ["classifier"]
    finally:
        shutdown(app)


def test_models_config_from_a_mapping_json_or_the_environment(tmp_path):
    models = {"a": "models:/a@champion", "b": str(tmp_path)}
    assert load_config({"models": models}, environ={}).models == tuple(models.items())
    assert load_config({}, environ={"CONTINUAL_MODELS": json.dumps(models)}).models == tuple(models.items())
    for bad, message in [("{nope", "not JSON"), ('["a"]', "must map"), ('{"a b": "x"}', "model name"),
                         ('{"a": ""}', "needs a model URI")]:
        with pytest.raises(ValueError, match=message):
            load_config({"models": bad}, environ={})
    with pytest.raises(ValueError, match="cannot be combined with model_uri"):
        load_config({"models": models, "model_uri": str(tmp_path)}, environ={})
    with pytest.raises(ValueError, match="cannot be combined with registered_model"):
        load_config({"models": models}, environ={"CONTINUAL_REGISTERED_MODEL": "x"})


def test_start_fails_only_when_no_model_loads_and_nothing_retries(tmp_path):
    from service.model_holder import ReloadFailed

    with pytest.raises(ReloadFailed):
        create_app({"models": {"a": str(tmp_path / "nope"), "b": str(tmp_path / "neither")}, "compute_threads": 1})
    app = create_app({"models": {"a": str(tmp_path / "nope")}, "poll_seconds": 60, "compute_threads": 1})
    try:
        assert app.test_client().get("/v2/health/ready").status_code == 503
    finally:
        shutdown(app)


@pytest.mark.parametrize("args, message", [
    (["--model", "alpha"], "--model wants NAME=URI"),
    (["--model", "=models:/a@champion"], "--model wants NAME=URI"),
    (["--model", "a b=models:/a@champion"], "model name 'a b'"),
    (["--model", "a=x", "--model", "a=y"], "given twice"),
    (["--model", "a=x", "--model-uri", "y"], "cannot be combined with model_uri"),
    ([], "no model to serve"),
])
def test_bad_model_arguments_are_refused_at_start(args, message):
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONTINUAL_")}
    refused = subprocess.run([sys.executable, "-m", "service.serve", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=60, env=env)
    assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr

"""The model server in-process (Flask test client, tiny model from a local folder): every endpoint and
every refusal. Registry behaviour: test_service_registry.py; real gunicorn: test_service_gunicorn.py."""
from __future__ import annotations

import gzip
import json
import shutil
import struct
import threading
from concurrent.futures import Future

import pytest

from service import create_app
from service.app import shutdown
from service.batching import MicroBatcher
from service.backends import Prediction
from service.config import load_config

LIMITS = {"max_texts": 4, "max_text_chars": 200, "max_body_bytes": 4096, "max_length": 16}
NAME = "classifier"


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    app = create_app({"model_uri": str(tiny_model_dir), "compute_threads": 1, **LIMITS})
    yield app
    shutdown(app)


@pytest.fixture
def client(app):
    return app.test_client()


def infer_body(texts, **tensor):
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts, **tensor}]}


# -- what works ---------------------------------------------------------------------------------

def test_index_describes_service_and_model(client):
    body = client.get("/").get_json()
    assert body["ready"] is True and body["model_name"] == NAME
    assert body["labels"] == ["neg", "neu", "pos"]
    assert body["model"]["source"] is None and "location" not in body["model"]  # a local folder: no public URI


def test_predict_gives_label_and_probabilities_per_text(client):
    response = client.post("/predict", json={"texts": ["a good day", "a bad day", ""]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["labels"] == ["neg", "neu", "pos"]
    assert len(body["predictions"]) == 3
    for prediction in body["predictions"]:
        assert set(prediction["probabilities"]) == {"neg", "neu", "pos"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
        assert prediction["truncated"] is False


def test_long_text_is_truncated_and_flagged(client):
    body = client.post("/predict", json={"texts": ["word " * 30, "short"]}).get_json()
    assert [p["truncated"] for p in body["predictions"]] == [True, False]


def test_predict_is_independent_of_batch_company(client):
    alone = client.post("/predict", json={"texts": ["hello there"]}).get_json()["predictions"][0]
    padded = client.post("/predict", json={"texts": ["hello there", "a much longer text " * 3]}).get_json()
    for label, value in alone["probabilities"].items():
        assert padded["predictions"][0]["probabilities"][label] == pytest.approx(value, abs=1e-5)


def test_round_folder_layout_is_accepted(tiny_model_dir, tmp_path):
    round_dir = tmp_path / "0002-movies"
    shutil.copytree(tiny_model_dir, round_dir / "model")
    (round_dir / "round.json").write_text(json.dumps({"key": "0002-movies", "index": 2, "data_hash": "abc"}))
    app = create_app({"model_uri": str(round_dir), "batching": False, "compute_threads": 1})
    try:
        body = app.test_client().post("/predict", json={"texts": ["x", "y"]}).get_json()
        assert body["model"]["round"] == "2" and body["model"]["arrival"] == "movies"
        assert body["model"]["data_hash"] == "abc" and len(body["predictions"]) == 2
    finally:
        shutdown(app)


def test_v2_server_and_health(client):
    assert client.get("/v2").get_json()["name"] == "continual"
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get(f"/v2/models/{NAME}/ready").status_code == 200


def test_v2_model_metadata(client):
    body = client.get(f"/v2/models/{NAME}").get_json()
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["shape"] for o in body["outputs"]} == {
        "label": [-1], "probabilities": [-1, 3], "truncated": [-1]}


def test_v2_infer_outputs(client):
    body = client.post(f"/v2/models/{NAME}/infer", json={"id": "r1", **infer_body(["good", "bad"])}).get_json()
    outputs = {o["name"]: o for o in body["outputs"]}
    assert body["id"] == "r1" and body["model_name"] == NAME
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [2])
    assert set(outputs["label"]["data"]) <= {"neg", "neu", "pos"}
    assert (outputs["probabilities"]["datatype"], outputs["probabilities"]["shape"]) == ("FP32", [2, 3])
    assert sum(outputs["probabilities"]["data"][:3]) == pytest.approx(1.0, abs=1e-5)
    assert outputs["truncated"]["data"] == [False, False]


def test_v2_infer_requested_outputs_and_nested_shape(client):
    request = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}],
               "outputs": [{"name": "probabilities"}]}
    body = client.post(f"/v2/models/{NAME}/infer", json=request).get_json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    assert body["outputs"][0]["shape"] == [2, 3]


def test_v2_infer_binary_tensor_extension(client):
    texts = ["good film", "héllo"]
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    response = client.post(f"/v2/models/{NAME}/infer", data=header + raw,
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert response.get_json()["outputs"][0]["shape"] == [2]


def test_binary_elements_are_counted_before_they_are_decoded(tiny_model_dir):
    """4 MiB of empty BYTES elements (the default body limit) is refused (422, too many texts) for less CPU than the
    same refusal on the JSON path, which parses its 4 MiB first; more elements than the shape says stop the decode
    at the first one too many."""
    import time

    app = create_app({"model_uri": str(tiny_model_dir), "compute_threads": 1, "batching": False, "monitoring": False})
    client, limit = app.test_client(), 4 * 1024 * 1024
    count = (limit - 300) // 4
    header = json.dumps({"inputs": [{"name": "text", "shape": [count], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * count}}]}).encode()
    binary = ({"Inference-Header-Content-Length": str(len(header))}, header + b"\0\0\0\0" * count)
    texts = (limit - 200) // 3
    plain = ({}, json.dumps(infer_body([""] * texts), separators=(",", ":")).encode())
    try:
        seconds = {}
        for name, (headers, body) in (("binary", binary), ("json", plain)):
            assert len(body) <= limit
            spent = []
            for _ in range(3):
                started = time.process_time()
                answer = client.post(f"/v2/models/{NAME}/infer", data=body, headers=headers)
                spent.append(time.process_time() - started)
                assert answer.status_code == 422 and "texts in one request; at most" in answer.get_json()["error"]
            seconds[name] = min(spent)
        assert seconds["binary"] < seconds["json"] + 0.01, seconds

        small = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": 4 * 1000}}]}).encode()
        extra = client.post(f"/v2/models/{NAME}/infer", data=small + b"\0\0\0\0" * 1000,
                            headers={"Inference-Header-Content-Length": str(len(small))})
        assert extra.status_code == 422
        assert "shape says 2 texts, the binary data holds more" in extra.get_json()["error"]
    finally:
        shutdown(app)


def test_v2_advertises_only_extensions_it_serves(client):
    """Each extension GET /v2 lists has its endpoints: none of them is a 404 (Triton's model_repository would need
    load and unload, which this server does not serve)."""
    endpoints = {"binary_tensor_data": [("POST", f"/v2/models/{NAME}/infer")],
                 "model_repository": [("POST", "/v2/repository/index"), ("POST", f"/v2/repository/models/{NAME}/load"),
                                      ("POST", f"/v2/repository/models/{NAME}/unload")]}
    extensions = client.get("/v2").get_json()["extensions"]
    assert extensions == ["binary_tensor_data"]
    for extension in extensions:
        for method, path in endpoints[extension]:
            assert client.open(path, method=method, json={}).status_code != 404, (extension, path)


def test_openapi_document_carries_the_apps_limits(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["schemas"]["TextList"]["maxItems"] == LIMITS["max_texts"]
    assert document["components"]["schemas"]["Text"]["maxLength"] == LIMITS["max_text_chars"]
    assert client.get("/openapi.yaml").get_data(as_text=True).startswith("openapi: 3.0.3")


def test_batching_off_answers_the_same(tiny_model_dir, client):
    app = create_app({"model_uri": str(tiny_model_dir), "batching": False, "compute_threads": 1})
    try:
        texts = ["one", "two", "three"]
        unbatched = app.test_client().post("/predict", json={"texts": texts}).get_json()["predictions"]
        batched = client.post("/predict", json={"texts": texts}).get_json()["predictions"]
        assert [p["label"] for p in unbatched] == [p["label"] for p in batched]
    finally:
        shutdown(app)


# -- refusals: always JSON, never 500 ---------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "message"), [
    (b"not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'["a"]', 422, "JSON object"),
    (b"null", 422, "JSON object"),
    (b"{}", 422, "missing field: texts"),
    (b'{"texts": ["a"], "extra": 1}', 422, "unknown field: extra"),
    (b'{"texts": "a"}', 422, "list of strings"),
    (b'{"texts": []}', 422, "must not be empty"),
    (b'{"texts": ["a", 3]}', 422, "texts[1] is not a string"),
    (b'{"texts": ["a", null]}', 422, "texts[1] is not a string"),
    (json.dumps({"texts": ["a"] * 5}).encode(), 422, "at most 4"),
    (json.dumps({"texts": ["x" * 201]}).encode(), 422, "at most 200"),
    (b'{"texts": ["\\ud800"]}', 422, "not valid Unicode"),
    (json.dumps({"texts": ["x" * 150] * 30}).encode(), 413, ""),
])
def test_predict_refuses_bad_input(client, body, status, message):
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.is_json and message in response.get_json()["error"]


@pytest.mark.parametrize("path, body", [
    ("/predict", {"texts": ["a lovely film"]}),
    (f"/v2/models/{NAME}/infer", infer_body(["a lovely film"])),
])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip"])
def test_a_compressed_body_is_415_naming_the_coding(client, path, body, coding):
    data = json.dumps(body).encode()
    sent = gzip.compress(data) if "gzip" in coding else data
    response = client.post(path, data=sent, content_type="application/json", headers={"Content-Encoding": coding})
    assert response.status_code == 415 and response.is_json
    unsupported = coding.replace("identity, ", "")
    assert response.get_json()["error"] == f"Content-Encoding {unsupported} is not supported: send the body uncompressed"
    assert response.headers["Accept-Encoding"] == "identity"
    plain = client.post(path, data=data, content_type="application/json", headers={"Content-Encoding": "identity"})
    assert plain.status_code == 200
    missing = client.post("/no/such/route", data=sent, headers={"Content-Encoding": coding})
    assert missing.status_code == 404 and missing.is_json


def test_wrong_method_and_unknown_route_are_json(client):
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"] and "error" in wrong.get_json()
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and "error" in missing.get_json()


@pytest.mark.parametrize("path", [
    "/v2/models/other", "/v2/models/other/ready", f"/v2/models/{NAME}/versions/7",
    f"/v2/models/{NAME}/versions/7/ready",
])
def test_v2_unknown_model_or_version_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and "error" in response.get_json()


@pytest.mark.parametrize(("request_body", "status", "message"), [
    ({"inputs": []}, 422, "exactly one tensor"),
    ({"inputs": [{"name": "wrong", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, 422, "unknown input"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 422, "BYTES"),
    ({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}, 422, "shape says 3"),
    ({"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}, 422, "shape must"),
    ({"inputs": [{"name": "text", "shape": "1", "datatype": "BYTES", "data": ["a"]}]}, 422, "shape must"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": "a"}]}, 422, "data must"),
    ({"inputs": [{"name": "text", "shape": [5], "datatype": "BYTES", "data": ["a"] * 5}]}, 422, "at most 4"),
    ({**infer_body(["a"]), "outputs": None}, 422, "outputs must"),
    ({**infer_body(["a"]), "outputs": [{"name": "label", "parameters": 3}]}, 422, "outputs must"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"], "parameters": []}]}, 422,
     "parameters must"),
    ({**infer_body(["a"]), "id": None}, 422, "id must"),
    ({**infer_body(["a"]), "outputs": [{"name": "logits"}]}, 422, "unknown output"),
    ({**infer_body(["a"]), "id": 5}, 422, "id must"),
    ({**infer_body(["a"]), "other": 1}, 422, "unknown field"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]},
     400, "binary_data_size"),
])
def test_v2_infer_refuses_bad_requests(client, request_body, status, message):
    response = client.post(f"/v2/models/{NAME}/infer", json=request_body)
    assert response.status_code == status
    assert message in response.get_json()["error"]


def test_v2_infer_refuses_bad_binary_header_and_unknown_model(client):
    bad_header = client.post(f"/v2/models/{NAME}/infer", data=b"{}",
                             headers={"Inference-Header-Content-Length": "99"})
    assert bad_header.status_code == 400 and "error" in bad_header.get_json()
    unknown = client.post("/v2/models/other/infer", json=infer_body(["a"]))
    assert unknown.status_code == 404
    versioned = client.post(f"/v2/models/{NAME}/versions/3/infer", json=infer_body(["a"]))
    assert versioned.status_code == 404


# -- admin ------------------------------------------------------------------------------------

def test_admin_is_off_without_a_token(client):
    response = client.post("/admin/reload")
    assert response.status_code == 403 and "no admin token" in response.get_json()["error"]


def test_admin_wants_the_bearer_token(tiny_model_dir):
    app = create_app({"model_uri": str(tiny_model_dir), "admin_token": "s3cret", "compute_threads": 1})
    client = app.test_client()
    try:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Basic s3cret"}).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/admin/reload", headers=good).get_json()["swapped"] is False
        assert client.post("/admin/reload?force=maybe", headers=good).status_code == 422
        assert client.post("/admin/reload?force=True", headers=good).status_code == 422
        forced = client.post("/admin/reload?force=true", headers=good).get_json()
        assert forced["swapped"] is True and forced["current"]["location"] == str(tiny_model_dir)
        assert client.get("/admin/reload", headers=good).status_code == 405
    finally:
        shutdown(app)


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_count_routes_errors_batches_and_model(client):
    client.post("/predict", json={"texts": ["a", "b"]})
    client.post("/predict", data=b"nope")
    client.get(f"/v2/models/unknown-{threading.get_ident()}")
    client.open("/predict", method="BREW")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'continual_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'continual_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict"}' in text
    assert 'continual_http_errors_total{route="/predict",status="400"}' in text
    # the rule, not the path: unknown names do not make new series
    assert 'route="/v2/models/<name>",status="404"' in text and "unknown-" not in text
    assert 'method="OTHER"' in text and "BREW" not in text  # invented methods share one series
    assert "continual_batch_size_count" in text
    # one series per served model (model_name: its V2 name); a local folder has no registry version
    assert 'continual_model_version{model_name="classifier"} -1.0' in text
    assert 'continual_model_reload_failures_total{model_name="classifier"} 0.0' in text


# -- pieces -----------------------------------------------------------------------------------

class RecordingModel:
    """Stands in for LoadedClassifier in the batcher: records each forward pass."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def predict(self, texts, batch_size):
        self.release.wait(5)  # hold the first forward so that the others queue up behind it
        self.batches.append(list(texts))
        return [Prediction(text, [1.0], False) for text in texts]


def test_batcher_groups_concurrent_requests_and_keeps_models_apart():
    old, new = RecordingModel(), RecordingModel()
    sizes: list[int] = []
    batcher = MicroBatcher(max_batch_size=8, max_wait_s=0.05, on_batch=sizes.append)
    try:
        futures: list[Future] = [batcher.submit(old, ["first"])]
        futures += [batcher.submit(old, [f"old{i}", f"old{i}b"]) for i in range(3)]
        futures += [batcher.submit(new, [f"new{i}"]) for i in range(2)]
        old.release.set()
        new.release.set()
        results = [[p.label for p in future.result(timeout=5)] for future in futures]
        assert results[1] == ["old0", "old0b"] and results[-1] == ["new1"]
        assert all(batch[0].startswith(("first", "old")) for batch in old.batches)
        assert new.batches == [["new0", "new1"]]  # never mixed with the old model's texts
        assert len(old.batches) < 4 and sum(sizes) == 9  # requests shared forward passes
    finally:
        batcher.close()


def test_a_lone_request_never_waits_for_company():
    """max_wait applies only while requests come concurrently: one client alone is answered at once (a 30 s
    wait would miss the 10 s timeout), and a burst after it is still gathered into shared forward passes."""
    model = RecordingModel()
    model.release.set()
    batcher = MicroBatcher(max_batch_size=8, max_wait_s=30.0)
    try:
        for i in range(3):
            assert [p.label for p in batcher.submit(model, [f"alone{i}"]).result(timeout=10)] == [f"alone{i}"]
        assert model.batches == [["alone0"], ["alone1"], ["alone2"]]
    finally:
        batcher.close()


def test_threads_per_worker_follow_the_usable_cores(monkeypatch):
    from service import gunicorn_conf

    monkeypatch.setattr(gunicorn_conf.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert gunicorn_conf.usable_cores() == 6
    assert [gunicorn_conf.compute_threads_per_worker(w) for w in (1, 2, 4, 6, 12)] == [6, 3, 1, 1, 1]


def test_config_reads_environment_and_refuses_unknown_keys():
    config = load_config({"max_texts": "7"}, environ={"CONTINUAL_BATCHING": "false", "MLFLOW_TRACKING_URI": "x",
                                                      "CONTINUAL_REGISTERED_MODEL": "m"})
    assert (config.max_texts, config.batching, config.tracking_uri) == (7, False, "x")
    assert config.source_uri == "models:/m@champion"
    with pytest.raises(ValueError, match="unknown service config keys: max_text"):
        load_config({"max_text": 3}, environ={})
    with pytest.raises(ValueError, match="no model to serve"):
        create_app({"model_uri": None})


def test_serve_command_line_becomes_service_config():
    from service.serve import config_from_args, gunicorn_options, parse_args

    args = parse_args(["--registered-model", "clf", "--poll-seconds", "30", "--set", "max_batch_size=8",
                       "--workers", "2", "--threads", "8"])
    config = config_from_args(args)
    assert config == {"max_batch_size": "8", "registered_model": "clf", "poll_seconds": 30.0}
    assert load_config(config, environ={}).max_batch_size == 8
    options = gunicorn_options("::1", 8080, args.workers, args.threads)
    assert (options["bind"], options["workers"], options["threads"]) == ("[::1]:8080", 2, 8)
    assert options["worker_class"] == "service.gunicorn_worker.ThreadWorker"

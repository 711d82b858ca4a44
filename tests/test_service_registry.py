"""The server against a real MLflow registry (sqlite in tmp_path): alias resolution, hot swap, polling."""
from __future__ import annotations

import time

import pytest

from service import create_app
from service.app import shutdown
from serving import MODEL_NAME, make_registry, move_alias, register_tiny_model


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_model_dir):
    """A registry with version 1 (neg/neu/pos) as champion and version 2 (four labels) registered beside it."""
    from continual.model.encoder import make_tiny_model

    folder = tmp_path_factory.mktemp("registry")
    uri = make_registry(folder)
    register_tiny_model(uri, tiny_model_dir, 1, "tweets")
    four_labels = make_tiny_model(folder / "v2", ["neg", "neu", "pos", "mixed"], seed=1)
    register_tiny_model(uri, four_labels, 2, "movies", alias=None)
    return uri


@pytest.fixture
def champion_on_v1(registry):
    move_alias(registry, "1")
    return registry


def served_version(client) -> str:
    return client.post("/predict", json={"texts": ["hello"]}).get_json()["model"]["version"]


def test_alias_resolves_to_version_with_round_tags(champion_on_v1):
    app = create_app({"registered_model": MODEL_NAME, "tracking_uri": champion_on_v1, "compute_threads": 1})
    try:
        body = app.test_client().post("/predict", json={"texts": ["fine"]}).get_json()
        assert body["model"] == {
            "source": f"models:/{MODEL_NAME}@champion", "name": MODEL_NAME, "version": "1", "round": "1",
            "round_key": "0001-tweets", "arrival": "tweets", "data_hash": "hash-0001-tweets", "int8_gate": None,
        }
        assert body["labels"] == ["neg", "neu", "pos"]
        metadata = app.test_client().get(f"/v2/models/{MODEL_NAME}").get_json()
        assert metadata["versions"] == ["1"]
        assert app.test_client().get(f"/v2/models/{MODEL_NAME}/versions/1/ready").status_code == 200
        assert app.test_client().get(f"/v2/models/{MODEL_NAME}/versions/2/ready").status_code == 404
    finally:
        shutdown(app)


def test_fixed_version_uri(registry):
    app = create_app({"model_uri": f"models:/{MODEL_NAME}/2", "tracking_uri": registry, "compute_threads": 1})
    try:
        body = app.test_client().post("/predict", json={"texts": ["fine"]}).get_json()
        assert (body["model"]["version"], body["labels"]) == ("2", ["neg", "neu", "pos", "mixed"])
    finally:
        shutdown(app)


def test_admin_reload_swaps_to_the_moved_alias(champion_on_v1):
    app = create_app({"registered_model": MODEL_NAME, "tracking_uri": champion_on_v1, "admin_token": "s3cret",
                      "compute_threads": 1})
    client = app.test_client()
    auth = {"Authorization": "Bearer s3cret"}
    try:
        assert served_version(client) == "1"
        unchanged = client.post("/admin/reload", headers=auth).get_json()
        assert unchanged["swapped"] is False and unchanged["current"]["version"] == "1"
        move_alias(champion_on_v1, "2")
        swapped = client.post("/admin/reload", headers=auth).get_json()
        assert (swapped["swapped"], swapped["previous"]["version"], swapped["current"]["version"]) == (True, "1", "2")
        body = client.post("/predict", json={"texts": ["x"]}).get_json()
        assert body["model"]["version"] == "2" and len(body["predictions"][0]["probabilities"]) == 4
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'continual_model_version{model_name="tiny-clf"} 2.0' in metrics
        assert ('continual_model_info{model_name="tiny-clf",name="tiny-clf",round="2",round_key="0002-movies",'
                'version="2"} 1.0') in metrics
        assert 'continual_model_reloads_total{model_name="tiny-clf"} 2.0' in metrics
    finally:
        shutdown(app)


def test_only_admin_requests_are_captured_and_each_row_names_the_version_that_answered(champion_on_v1, tmp_path):
    """capture_anonymous off (the default): anonymous traffic on both APIs is served but never captured; requests
    with the admin token are, and each row says which model version answered, across a hot swap."""
    from service.monitoring.capture_files import read_captures

    captures = tmp_path / "captures"
    app = create_app({"registered_model": MODEL_NAME, "tracking_uri": champion_on_v1, "admin_token": "s3cret",
                      "compute_threads": 1, "capture_rate": 1.0, "capture_dir": str(captures)})
    client = app.test_client()
    auth = {"Authorization": "Bearer s3cret"}
    infer = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["anon v2 a", "anon v2 b"]}]}
    try:
        for i in range(10):
            assert client.post("/predict", json={"texts": [f"anonymous {i}"]}).status_code == 200
            assert client.post(f"/v2/models/{MODEL_NAME}/infer", json=infer).status_code == 200
            assert client.post("/predict", json={"texts": ["wrong token"]},
                               headers={"Authorization": "Bearer nope"}).status_code == 200
        assert client.post("/predict", json={"texts": ["trusted one"]}, headers=auth).status_code == 200
        move_alias(champion_on_v1, "2")
        assert client.post("/admin/reload", headers=auth).get_json()["swapped"] is True
        infer["inputs"][0]["data"] = ["trusted two", "trusted three"]
        assert client.post(f"/v2/models/{MODEL_NAME}/infer", json=infer, headers=auth).status_code == 200
    finally:
        move_alias(champion_on_v1, "1")
        shutdown(app)  # writes what is queued
    rows = [(r["text"], r["model_name"], r["model_version"], r["round_key"]) for r in read_captures(captures)]
    assert rows == [("trusted one", MODEL_NAME, "1", "0001-tweets"), ("trusted two", MODEL_NAME, "2", "0002-movies"),
                    ("trusted three", MODEL_NAME, "2", "0002-movies")]


def test_poll_follows_the_alias(champion_on_v1):
    app = create_app({"registered_model": MODEL_NAME, "tracking_uri": champion_on_v1, "poll_seconds": 0.2,
                      "compute_threads": 1})
    client = app.test_client()
    try:
        assert served_version(client) == "1"
        move_alias(champion_on_v1, "2")
        deadline = time.monotonic() + 20
        while served_version(client) != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served_version(client) == "2"
    finally:
        shutdown(app)


def test_broken_model_keeps_the_old_one_serving(champion_on_v1, tmp_path):
    from mlflow import MlflowClient

    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "config.json").write_text("{not json")
    mlflow_client = MlflowClient(tracking_uri=champion_on_v1)
    app = create_app({"registered_model": MODEL_NAME, "tracking_uri": champion_on_v1, "admin_token": "t",
                      "compute_threads": 1})
    client = app.test_client()
    try:
        # A version whose artifacts are not a model: what a half-written or corrupted upload looks like.
        version = mlflow_client.create_model_version(MODEL_NAME, broken_dir.as_uri()).version
        move_alias(champion_on_v1, str(version))
        failed = client.post("/admin/reload", headers={"Authorization": "Bearer t"})
        assert failed.status_code == 502
        assert failed.get_json()["serving"]["version"] == "1"
        assert served_version(client) == "1"
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'continual_model_reload_failures_total{model_name="tiny-clf"} 1.0' in metrics
        assert 'continual_model_version{model_name="tiny-clf"} 1.0' in metrics
    finally:
        move_alias(champion_on_v1, "1")
        shutdown(app)


def test_a_model_not_registered_yet_is_waited_for_and_a_broken_one_fails_fast(registry):
    """Nothing at the URI yet (no round has registered it): the app starts, answers 503 "no model yet", and looks
    again even without a poll; that is not a reload failure. A source that fails otherwise still stops the start
    when nothing would retry it."""
    from service.model_holder import ReloadFailed

    uri = registry
    with pytest.raises(ReloadFailed):
        create_app({"model_uri": "runs:/0123456789abcdef/model", "tracking_uri": uri})
    absent = [{"registered_model": "nothing-here"}, {"registered_model": "nothing-here", "poll_seconds": 60},
              {"registered_model": MODEL_NAME, "alias": "no-such-alias"}]
    for config in absent:
        app = create_app({"tracking_uri": uri, **config})
        try:
            assert app.test_client().get("/v2/health/ready").status_code == 503
            refused = app.test_client().post("/predict", json={"texts": ["x"]})
            assert refused.status_code == 503 and "no model yet" in refused.get_json()["error"]
            metrics = app.test_client().get("/metrics").get_data(as_text=True).splitlines()
            failures = [line for line in metrics if line.startswith("continual_model_reload_failures_total{")]
            assert failures and all(line.endswith(" 0.0") for line in failures)
        finally:
            shutdown(app)

"""MLflow tracking of rounds, against a real SQLite store in a temporary workspace (no mocks).

Round folders are written by hand per the round-folder contract, with the tiny model as their model.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from continual.params import load_params
from continual.registry.connect import FAIL_FAST, Tracking, TrackingUnavailable, connect
from continual.registry.lineage import log_round, reconcile
from continual.registry.model_name import registered_model
from continual.registry.round_folder import RoundFolder
from continual.registry.tags import KIND_TAG, ROUND_HASH_TAG
from continual.workspace.layout import Workspace
from round_folders import NAMES, ROWS, write_stream
from serving import free_port


def round_runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'round'")


@pytest.fixture(autouse=True)
def local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_model_dir):
    """Three rounds, each logged as its round stage would: (workspace, params, client, experiment id)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        ws = write_stream(tmp_path_factory.mktemp("ws"), tiny_model_dir, ROWS, NAMES)
        params = load_params(ws.params_file)
        for key in ws.stream():
            log_round(ws, key, params)
        client, experiment_id = connect(ws, params)
        yield ws, params, client, experiment_id


def lineage_run(client, experiment_id: str):
    (run,) = client.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'lineage'")
    return run


def test_lineage_run_carries_round_metrics_by_round(logged):
    ws, _, client, experiment_id = logged
    parent = lineage_run(client, experiment_id).info.run_id

    def history(name: str) -> list[tuple[int, float]]:
        return sorted((m.step, round(m.value, 4)) for m in client.get_metric_history(parent, name))

    assert history("avg_acc") == [(1, 0.80), (2, 0.78), (3, 0.7867)]
    assert history("acc.0001-tweets") == [(1, 0.80), (2, 0.74), (3, 0.72)]
    assert history("forgetting.avg") == [(2, 0.06), (3, 0.055)]  # round 1 has none: not logged
    assert history("forgetting.max") == [(2, 0.06), (3, 0.08)]
    assert [m.step for m in client.get_metric_history(parent, "bwt")] == [2, 3]
    assert (ws.root / "mlflow.db").exists() and (ws.root / "mlartifacts").is_dir()
    artifacts = {a.path for a in client.list_artifacts(parent, "plots")}
    assert artifacts == {"plots/accuracy_matrix.png", "plots/forgetting_curve.png"}


def test_round_runs_are_nested_and_hold_tags_params_metrics_artifacts(logged):
    ws, params, client, experiment_id = logged
    parent = lineage_run(client, experiment_id).info.run_id
    runs = {run.info.run_name: run for run in round_runs(client, experiment_id)}
    assert sorted(runs) == ws.stream()
    assert {run.data.tags["mlflow.parentRunId"] for run in runs.values()} == {parent}
    run = runs["0002-movies"]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["continual.arrival"] == "movies"
    assert tags["continual.data_hash"] == "md5-0002-movies"
    assert tags["continual.git_commit"] == "uncommitted"  # the workspace is no git repository
    assert tags["continual.parent_round"] == "0001-tweets"
    assert tags["continual.strategy"] == "replay+ewc"
    assert tags["continual.round_index"] == "2"
    assert tags[ROUND_HASH_TAG] == RoundFolder.read(ws, "0002-movies").round_hash
    assert run.data.params["train.lr"] == str(params["train"]["lr"])  # round.json's params, flattened
    assert run.data.params["strategy.ewc.lambda"] == str(params["strategy"]["ewc"]["lambda"])
    assert run.data.params["strategy.replay.policy"] == "class_balanced"
    metrics = run.data.metrics
    assert metrics["acc.0001-tweets"] == 0.74 and metrics["forgetting.0001-tweets"] == 0.06
    assert metrics["acc_before_update"] == 0.5 and metrics["buffer_size"] == 500
    assert metrics["phase_seconds.load"] == 2.5 and metrics["phase_seconds.export"] == 1.2  # continual status --costs
    assert metrics["head_refit_lambda"] == 3.16 and "ridge_lambda" not in metrics  # the λ the round chose
    loss = client.get_metric_history(run.info.run_id, "train.loss")
    assert [(m.step, round(m.value, 2)) for m in loss] == [(s, round(1.1 - 0.1 * s, 2)) for s in range(1, 6)]
    assert "acc_before_update" not in runs["0001-tweets"].data.metrics  # null in round 1
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "round.json", "plots"} <= files
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/accuracy_matrix.png", "plots/forgetting_curve.png", "plots/confusion_matrix.png"}


def test_every_round_registers_a_tagged_model_version(logged):
    ws, params, client, _ = logged
    name = registered_model(ws, params)
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == ["1", "2", "3"]
    tags = versions["2"].tags
    assert {k: tags[k] for k in ("round", "round_key", "arrival", "data_hash")} == {
        "round": "2", "round_key": "0002-movies", "arrival": "movies", "data_hash": "md5-0002-movies"}
    assert tags["run_id"] == versions["2"].run_id
    assert client.get_run(tags["run_id"]).info.run_name == "0002-movies"


def test_the_version_is_a_model_from_code_with_inputs_and_outputs(logged):
    """MLflow's recommended form: the model's code is logged as a file (nothing is pickled), and the signature
    names the outputs a caller gets."""
    import mlflow

    ws, params, _, _ = logged
    info = mlflow.models.get_model_info(f"models:/{registered_model(ws, params)}/1")
    assert "model_code_path" in info.flavors["python_function"]
    assert "python_model.pkl" not in str(info.flavors)
    assert [c.name for c in info.signature.outputs.inputs] == ["label", "score", "probabilities"]


def test_logging_a_round_twice_logs_it_once(logged):
    ws, params, client, experiment_id = logged
    first = {run.info.run_name: run.info.run_id for run in round_runs(client, experiment_id)}
    assert log_round(ws, "0002-movies", params) == first["0002-movies"]
    assert len(round_runs(client, experiment_id)) == 3
    assert len(client.search_model_versions(f"name = '{registered_model(ws, params)}'")) == 3


def test_reconcile_logs_a_round_the_run_cache_skipped_and_never_duplicates(tmp_path, tiny_model_dir):
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS, NAMES)
    params = load_params(ws.params_file)
    log_round(ws, "0001-tweets", params)
    log_round(ws, "0003-amazon", params)  # round 2 restored from DVC's run cache: never logged

    added = reconcile(Tracking(ws, params))
    assert list(added) == ["0002-movies"]
    assert reconcile(Tracking(ws, params)) == {}

    client, experiment_id = connect(ws, params)
    runs = round_runs(client, experiment_id)
    assert client.get_run(added["0002-movies"]).info.run_name == "0002-movies"
    hashes = sorted(run.data.tags[ROUND_HASH_TAG] for run in runs)
    assert hashes == sorted(RoundFolder.read(ws, key).round_hash for key in ws.stream())
    parent = lineage_run(client, experiment_id).info.run_id
    assert sorted(m.step for m in client.get_metric_history(parent, "avg_acc")) == [1, 2, 3]


def test_two_strategies_are_two_lineages_in_one_experiment(tmp_path, tiny_model_dir, monkeypatch):
    # A tracking server (here: another SQLite file) named by the environment wins over the workspace's DB.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'server.db'}")
    monkeypatch.chdir(tmp_path)  # such a store puts its artifacts under the working directory
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:1], NAMES)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=ws.root, check=True)
    subprocess.run(git + ["add", "-A"], cwd=ws.root, check=True)
    subprocess.run(git + ["commit", "-qm", "stream"], cwd=ws.root, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True, text=True).stdout.strip()
    params = load_params(ws.params_file)
    replay_ewc = log_round(ws, "0001-tweets", params)
    write_stream(ws.root, tiny_model_dir, ROWS[:1], NAMES, strategy="naive")  # the same round, another strategy
    naive = log_round(ws, "0001-tweets", params)

    assert naive != replay_ewc
    assert not (ws.root / "mlflow.db").exists() and (tmp_path / "server.db").exists()
    client, experiment_id = connect(ws, params)
    parents = client.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'lineage'")
    assert sorted(p.data.tags["continual.strategy"] for p in parents) == ["naive", "replay+ewc"]
    for parent in parents:
        assert [m.step for m in client.get_metric_history(parent.info.run_id, "avg_acc")] == [1]
    assert client.get_run(replay_ewc).data.tags["continual.git_commit"] == head


def test_a_dead_tracking_server_fails_in_seconds_with_a_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    import time

    for variable in FAIL_FAST:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:1], NAMES)
    params = load_params(ws.params_file)
    started = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match="did not answer.*dvc repro"):
        reconcile(Tracking(ws, params))
    assert time.perf_counter() - started < 30  # MLflow's own defaults retry for minutes
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "20"


def test_fail_fast_settings_never_override_the_users(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    connect(Workspace.at(tmp_path), load_params())
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"


def test_reconcile_leaves_a_round_that_has_not_run_yet(tmp_path, tiny_model_dir):
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:2], NAMES)
    ws.stream_file.write_text(ws.stream_text(ws.stream() + ["0003-amazon"]))  # ingested, not trained yet
    params = load_params(ws.params_file)
    assert list(reconcile(Tracking(ws, params))) == ["0001-tweets", "0002-movies"]
    ws.stream_file.write_text(ws.stream_text(["0001-nothing"]))
    assert reconcile(Tracking(ws, params)) == {}


def test_logging_a_round_never_imports_torch(tmp_path, tiny_model_dir):
    """torch alone is about 0.9 GB of resident memory: the track stage of a full fine-tuning round logs and
    registers its model folder without it (a LoRA round's adapters are merged first, which needs torch)."""
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:1], NAMES)
    code = ("import sys\nfrom continual.params import load_params\nfrom continual.registry.connect import connect\n"
            "from continual.registry.lineage import log_round\n"
            "from continual.workspace.layout import Workspace\n"
            f"ws = Workspace.at({str(ws.root)!r})\nparams = load_params(ws.params_file)\n"
            "for key in ws.stream():\n    log_round(ws, key, params)\n"
            "print('torch' in sys.modules, len(connect(ws, params)[0].search_model_versions()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].split() == ["False", "1"]

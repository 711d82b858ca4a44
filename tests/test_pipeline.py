"""`dvc repro` in a real workspace: exactly the rounds that are out of date train, and nothing else; the
track stage logs them to MLflow (the workspace's SQLite store) and gates the newest."""
import json
import time
from pathlib import Path

import pytest
import yaml

from continual.params import load_params
from helpers import BIN, GIT, registry, rounds_run, run, write_arrival
from serving import free_port


def round_runs(workspace: Path) -> dict[str, list]:
    client = registry(workspace)
    (experiment,) = client.search_experiments(filter_string="name = 'continual'")
    runs: dict[str, list] = {}
    for found in client.search_runs([experiment.experiment_id], "tags.`continual.kind` = 'round'"):
        runs.setdefault(found.info.run_name, []).append(found)
    return runs


def champion(workspace: Path) -> str:
    from continual.registry.model_name import registered_model
    from continual.params import load_params
    from continual.workspace.layout import Workspace

    name = registered_model(Workspace.at(workspace), load_params(workspace / "params.yaml"))  # continual-<id>
    return str(registry(workspace).get_model_version_by_alias(name, "champion").version)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ws") / "stream"
    run(root.parent, BIN / "continual", "init", str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["train"].update(epochs=3, lr=3e-3, batch_size=16)
    params["strategy"]["replay"]["mem_size"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_each_ingest_then_repro_trains_exactly_one_new_round(workspace, tmp_path):
    first = write_arrival(tmp_path / "one.csv", {"neg": "awful terrible", "pos": "lovely great"}, 20, "one")
    run(workspace, BIN / "continual", "ingest", str(first), "--name", "one")
    assert rounds_run(run(workspace, BIN / "dvc", "repro")) == ["0001-one"]

    second = write_arrival(tmp_path / "two.csv", {"neg": "broken useless", "neu": "plain okay", "pos": "works fine"},
                           20, "two")
    run(workspace, BIN / "continual", "ingest", str(second), "--name", "two")
    assert rounds_run(run(workspace, BIN / "dvc", "repro")) == ["0002-two"]

    result = run(workspace, BIN / "dvc", "repro")
    assert rounds_run(result) == [] and "Running stage 'track'" in result.stdout  # the track stage always runs
    assert sorted(round_runs(workspace)) == ["0001-one", "0002-two"]
    assert all(len(runs) == 1 for runs in round_runs(workspace).values())  # logged once, however often it ran
    assert "gated before" in result.stdout

    metrics = json.loads((workspace / "rounds" / "0002-two" / "metrics.json").read_text())
    assert metrics["arrivals"] == ["0001-one", "0002-two"]
    assert len(metrics["accuracy_matrix"]) == 2 and len(metrics["accuracy_matrix"][1]) == 2
    assert metrics["acc_before_update"] is not None
    model_dir = workspace / "rounds" / "0002-two" / "model"
    assert (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "classifier.json").read_text())["labels"] == ["neg", "pos", "neu"]
    assert (workspace / "reports" / "accuracy_matrix.png").stat().st_size > 1000

    shown = run(workspace, BIN / "dvc", "metrics", "show", "--json").stdout
    assert "avg_acc" in shown and "forgetting_avg" in shown
    status = run(workspace, BIN / "continual", "status").stdout
    assert "0002-two" in status and load_params()["strategy"]["name"] in status  # the shipped default
    costs = run(workspace, BIN / "continual", "status", "--costs").stdout.splitlines()
    assert costs[0].split()[:3] == ["round", "strategy", "load"] and "train" in costs[0]
    assert costs[1].startswith("0001-one") and costs[2].startswith("0002-two")


def test_editing_an_earlier_arrival_reruns_it_and_every_later_round(workspace):
    def data_hash() -> str:
        return json.loads((workspace / "rounds" / "0001-one" / "round.json").read_text())["data_hash"]

    ingested = yaml.safe_load((workspace / "data" / "arrivals" / "0001-one.dvc").read_text())["outs"][0]["md5"]
    assert data_hash() == ingested
    train = workspace / "data" / "arrivals" / "0001-one" / "train.jsonl"
    rows = train.read_text().splitlines()
    train.write_text("\n".join(rows[:-1]) + "\n")
    assert rounds_run(run(workspace, BIN / "dvc", "repro")) == ["0001-one", "0002-two"]

    # round.json records the arrival it trained on, not the one ingested: the md5 DVC itself recorded now.
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["round@0001-one"]
    (arrival,) = [dep for dep in lock["deps"] if dep["path"] == "data/arrivals/0001-one"]
    assert data_hash() == arrival["md5"] != ingested
    runs = round_runs(workspace)["0001-one"]
    assert sorted(r.data.tags["continual.data_hash"] for r in runs) == sorted([ingested, arrival["md5"]])


def test_a_file_copied_in_without_ingest_fails_repro_at_once(workspace):
    stray = workspace / "data" / "arrivals" / "sneaky.csv"
    stray.write_text("text,label\nhello,pos\n")
    try:
        result = run(workspace, BIN / "dvc", "repro", check=False)
        assert result.returncode != 0
        assert "continual ingest" in result.stdout + result.stderr
        assert rounds_run(result) == []
    finally:
        stray.unlink()


def test_a_dead_tracking_server_costs_a_retry_of_the_logging_never_a_retrain(workspace, tmp_path):
    third = write_arrival(tmp_path / "three.csv", {"neg": "bad poor", "pos": "good nice"}, 20, "three")
    run(workspace, BIN / "continual", "ingest", str(third), "--name", "three")
    dead = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}

    result = run(workspace, BIN / "dvc", "repro", check=False, **dead)
    assert result.returncode != 0 and rounds_run(result) == ["0003-three"]  # the round trained and was kept
    folder = workspace / "rounds" / "0003-three"
    assert (folder / "metrics.json").exists()
    assert "round@0003-three" in yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    run(workspace, "git", "check-ignore", "-q", "rounds/0003-three")  # DVC's output, never git's
    assert "did not answer" in result.stderr and "only the track stage reruns" in result.stderr
    trained_at = (folder / "metrics.json").stat().st_mtime_ns, folder.stat().st_mtime_ns

    started = time.perf_counter()
    again = run(workspace, BIN / "dvc", "repro", check=False, **dead)
    assert again.returncode != 0 and rounds_run(again) == [] and "Running stage 'track'" in again.stdout
    assert time.perf_counter() - started < 30  # MLflow's default retries would take minutes

    back = run(workspace, BIN / "dvc", "repro")  # the workspace's own store again
    assert rounds_run(back) == []
    assert ((folder / "metrics.json").stat().st_mtime_ns, folder.stat().st_mtime_ns) == trained_at
    (logged,) = round_runs(workspace)["0003-three"]
    assert logged.data.tags["promotion.decision"] in ("accepted", "refused")  # the newest round was gated


def test_dvc_exp_run_logs_but_never_moves_the_champion(workspace):
    run(workspace, *GIT, "add", "-A")
    run(workspace, *GIT, "commit", "-qm", "three rounds")
    before = champion(workspace)
    result = run(workspace, BIN / "dvc", "exp", "run", "-S", "train.lr=0.002")
    assert rounds_run(result) == ["0001-one", "0002-two", "0003-three"]
    assert "promotion: skipped, the alias stays where it is (DVC experiment" in result.stdout
    assert champion(workspace) == before
    newest = [r for r in round_runs(workspace)["0003-three"] if r.data.params["train.lr"] == "0.002"]
    (experiment_run,) = newest  # logged, in a lineage of its own
    assert "promotion.decision" not in experiment_run.data.tags
    assert "not applied: DVC experiment" in experiment_run.data.tags["promotion.skipped"]

    # The experiment's results stay in the workspace; a plain repro still does not promote them.
    plain = run(workspace, BIN / "dvc", "repro")
    assert rounds_run(plain) == [] and "was trained in a DVC experiment" in plain.stdout
    assert champion(workspace) == before

"""`dvc repro` in a real workspace: exactly the rounds that are out of date train, and nothing else."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def run(cwd, *cmd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CONTINUAL_THREADS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def rounds_run(result) -> list[str]:
    return re.findall(r"Running stage 'round@([^']+)'", result.stdout + result.stderr)


def write_arrival(path: Path, labels: dict[str, str], n: int, salt: str) -> Path:
    lines = ["text,label"] + [f"{words} {salt} number {i},{label}" for label, words in labels.items() for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


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

    assert rounds_run(run(workspace, BIN / "dvc", "repro")) == []

    metrics = json.loads((workspace / "rounds" / "0002-two" / "metrics.json").read_text())
    assert metrics["arrivals"] == ["0001-one", "0002-two"]
    assert len(metrics["accuracy_matrix"]) == 2 and len(metrics["accuracy_matrix"][1]) == 2
    assert metrics["acc_before_update"] is not None
    model_dir = workspace / "rounds" / "0002-two" / "model"
    assert (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos", "2": "neu"}
    assert (workspace / "reports" / "accuracy_matrix.png").stat().st_size > 1000

    shown = run(workspace, BIN / "dvc", "metrics", "show", "--json").stdout
    assert "avg_acc" in shown and "forgetting_avg" in shown
    status = run(workspace, BIN / "continual", "status").stdout
    assert "0002-two" in status and "replay+ewc" in status


def test_editing_an_earlier_arrival_reruns_it_and_every_later_round(workspace):
    train = workspace / "data" / "arrivals" / "0001-one" / "train.jsonl"
    rows = train.read_text().splitlines()
    train.write_text("\n".join(rows[:-1]) + "\n")
    assert rounds_run(run(workspace, BIN / "dvc", "repro")) == ["0001-one", "0002-two"]


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

"""`dvc repro` in a real workspace with `strategy.name: ridge`: each round adds its arrival to the sums the
previous round saved, and nothing is trained."""
import json

import yaml
from safetensors.torch import load_file

from helpers import BIN, rounds_run, run, write_arrival


def test_ridge_stream_under_dvc_repro_continues_the_previous_rounds_sums(tmp_path, tiny_model_dir):
    root = tmp_path / "stream"
    run(tmp_path, BIN / "continual", "init", str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["strategy"]["name"] = "ridge"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = write_arrival(tmp_path / "one.csv", {"neg": "awful terrible", "pos": "lovely great"}, 20, "one")
    run(root, BIN / "continual", "ingest", str(first), "--name", "one")
    assert rounds_run(run(root, BIN / "dvc", "repro")) == ["0001-one"]
    second = write_arrival(tmp_path / "two.csv", {"neg": "broken", "neu": "plain okay", "pos": "works"}, 20, "two")
    run(root, BIN / "continual", "ingest", str(second), "--name", "two")
    assert rounds_run(run(root, BIN / "dvc", "repro")) == ["0002-two"]
    assert rounds_run(run(root, BIN / "dvc", "repro")) == []

    one, two = (load_file(root / "rounds" / key / "ridge.safetensors") for key in ("0001-one", "0002-two"))
    rows = [sum(1 for _ in (root / "data" / "arrivals" / key / "train.jsonl").open()) for key in ("0001-one", "0002-two")]
    assert float(one["gram"][-1, -1]) == rows[0]              # the bias feature counts the rows summed so far
    assert float(two["gram"][-1, -1]) == rows[0] + rows[1]    # round 2 started from round 1's sums
    assert tuple(two["xty"].shape) == (one["xty"].shape[0], 3)  # a column per class; neu arrived in round 2
    metrics = json.loads((root / "rounds" / "0002-two" / "metrics.json").read_text())
    assert metrics["strategy"] == "ridge" and metrics["examples"] == rows[1]
    card = json.loads((root / "rounds" / "0002-two" / "model" / "classifier.json").read_text())
    assert card["labels"] == ["neg", "pos", "neu"] and card["pooling"] == "mean"

"""Strategies on a small class-incremental stream, with the tiny model: state round trips and forgetting."""
import json

import pytest
import torch

from continual.arrivals.jsonl import read_jsonl
from continual.strategies import RoundContext, make_strategy
from helpers import WORDS, build_stream, run_stream, tiny_params


@pytest.fixture(scope="module")
def class_incremental(tmp_path_factory, tiny_model_dir):
    results = {}
    for strategy in ("naive", "replay", "replay+ewc"):
        ws = build_stream(tmp_path_factory.mktemp(strategy.replace("+", "_")), [["a", "b"], ["c", "d"]])
        results[strategy] = (ws, run_stream(ws, tiny_params(tiny_model_dir, strategy)))
    return results


def test_replay_forgets_measurably_less_than_naive(class_incremental):
    naive = class_incremental["naive"][1][-1]
    replay = class_incremental["replay"][1][-1]
    assert naive["forgetting_avg"] - replay["forgetting_avg"] >= 0.3, (naive["accuracy_matrix"], replay["accuracy_matrix"])
    assert replay["avg_acc"] > naive["avg_acc"]


def test_class_incremental_head_keeps_old_class_ids(class_incremental):
    ws, _ = class_incremental["replay"]
    card = json.loads((ws.round_dir("0002-part2") / "model" / "classifier.json").read_text())
    assert card["labels"] == ["a", "b", "c", "d"]
    buffer = read_jsonl(ws.round_dir("0002-part2") / "buffer.jsonl")
    # old-class rows still carry their own labels after the head grew (not re-indexed to the new classes)
    assert {r["label"] for r in buffer if r["arrival"] == "0001-part1"} == {"a", "b"}
    assert all(WORDS[r["label"]] in r["text"] for r in buffer)


def test_class_balanced_buffer_is_bounded_and_balanced(class_incremental):
    ws, metrics = class_incremental["replay"]
    buffer = read_jsonl(ws.round_dir("0002-part2") / "buffer.jsonl")
    assert len(buffer) == metrics[-1]["buffer_size"] == 20
    counts = {label: sum(r["label"] == label for r in buffer) for label in "abcd"}
    assert counts == {"a": 5, "b": 5, "c": 5, "d": 5}


def test_buffer_round_trips_through_its_file(class_incremental, tiny_model_dir, tmp_path):
    from continual.model.encoder import load_classifier

    ws, _ = class_incremental["replay"]
    model, tokenizer = load_classifier(ws.round_dir("0002-part2") / "model")
    params = tiny_params(tiny_model_dir, "replay")
    strategy = make_strategy(params)
    context = RoundContext(tokenizer, model.label2id, 32)
    strategy.restore(ws.round_dir("0002-part2"), context, model)
    assert len(strategy.policy.buffer) == 20
    tmp_path.mkdir(exist_ok=True)
    assert strategy.save(tmp_path, context) == {"buffer_size": 20}
    before = sorted(map(json.dumps, read_jsonl(ws.round_dir("0002-part2") / "buffer.jsonl")))
    assert sorted(map(json.dumps, read_jsonl(tmp_path / "buffer.jsonl"))) == before


def test_ewc_state_restores_the_penalty_it_saved(class_incremental, tiny_model_dir):
    from continual.model.encoder import LogitsOnly, grow_head, load_classifier
    from safetensors.torch import load_file

    ws, _ = class_incremental["replay+ewc"]
    folder = ws.round_dir("0002-part2")
    saved = load_file(folder / "ewc.safetensors")
    importances = {k: v for k, v in saved.items() if k.startswith("importance:")}
    assert importances and all(v.min() >= 0 for v in importances.values())  # a Fisher is a sum of squares
    assert sum(float(v.sum()) for v in importances.values()) > 0
    assert set(saved) == set(importances)  # the anchor weights are model/ itself, not a second copy

    model, tokenizer = load_classifier(folder / "model")
    grow_head(model, ["a", "b", "c", "d", "e"])  # a new class arrives: the head grows, the penalty still applies
    wrapped = LogitsOnly(model, tokenizer.pad_token_id)
    strategy = make_strategy(tiny_params(tiny_model_dir, "ewc"))
    strategy.restore(folder, RoundContext(tokenizer, model.label2id, 32), wrapped)

    class Clock:
        train_exp_counter = 2

    class Fake:
        clock, device = Clock(), "cpu"

        def __init__(self):
            self.model, self.loss = wrapped, torch.tensor(0.0)

    at_saved = Fake()
    strategy.plugin.before_backward(at_saved)
    assert float(at_saved.loss) == pytest.approx(0.0, abs=1e-6)  # weights equal the snapshot: no penalty

    with torch.no_grad():
        for p in wrapped.parameters():
            p.add_(0.01)
    moved = Fake()
    strategy.plugin.before_backward(moved)
    assert float(moved.loss) > 0.0


def test_joint_trains_on_every_arrival_from_the_base(class_incremental, tmp_path, tiny_model_dir):
    ws = build_stream(tmp_path, [["a", "b"], ["c", "d"]])
    metrics = run_stream(ws, tiny_params(tiny_model_dir, "joint"))
    assert metrics[-1]["train_rows"] == 160
    assert metrics[-1]["forgetting_avg"] <= class_incremental["naive"][1][-1]["forgetting_avg"]

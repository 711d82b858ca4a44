"""adapt: fine-tune the encoder first, then freeze it under a ridge head; head-only ONNX; a round's phase costs."""
import json

import numpy as np
import onnxruntime
import torch
from safetensors.torch import load_file

from continual.model.encoder import load_classifier
from continual.strategies.adapt import balanced_sample
from helpers import build_stream, run_stream, tiny_params


def encoder_weights(folder) -> dict:
    return {k: v for k, v in load_file(folder / "model" / "model.safetensors").items()}


def test_adapt_trains_the_first_round_then_keeps_the_encoder(tiny_model_dir, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"], ["a", "d"]], n_train=12, n_test=4)
    params = tiny_params(tiny_model_dir, "adapt", epochs=2)
    metrics = run_stream(ws, params)
    first, second, third = (ws.round_dir(k) for k in ws.stream())
    assert [m["adapted"] for m in metrics] == [True, False, False]
    assert metrics[0]["trainable_params"] > 0 and metrics[1]["trainable_params"] == 0
    assert metrics[1]["examples"] == 24 and metrics[2]["train_rows"] == 24  # one forward pass over the arrival
    base = load_file(tiny_model_dir / "model.safetensors")
    adapted = encoder_weights(first)
    assert any(not torch.equal(adapted[k], base[k]) for k in base if k in adapted)  # round 1 moved the encoder
    for later in (second, third):  # and nothing moves it after
        weights = encoder_weights(later)
        assert all(torch.equal(weights[k], adapted[k]) for k in adapted)
    # the head after round 3 is the ridge solution over every arrival's features under the adapted encoder
    sums = load_file(third / "ridge.safetensors")
    assert float(sums["gram"][-1, -1]) == 72.0  # 3 arrivals x 24 train rows
    assert all(m["ridge_lambda"] > 0 for m in metrics)
    assert not any((ws.round_dir(k) / "buffer.jsonl").exists() for k in ws.stream())  # no stored texts


def test_a_named_arrival_adapts_the_encoder_again(tiny_model_dir, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"], ["a", "d"]], n_train=12, n_test=4)
    params = tiny_params(tiny_model_dir, "adapt", epochs=2)
    params["strategy"]["adapt"]["arrivals"] = ["part3"]
    metrics = run_stream(ws, params)
    assert [m["adapted"] for m in metrics] == [True, False, True]
    # the re-adapting round trained on its arrival plus a class-balanced replay of earlier rows from the workspace
    assert metrics[2]["train_rows"] == 24 + params["strategy"]["replay"]["mem_size"]
    second, third = (ws.round_dir(k) for k in ws.stream()[1:])
    assert any(not torch.equal(a, b) for a, b in zip(encoder_weights(second).values(),
                                                     encoder_weights(third).values()))
    assert float(load_file(third / "ridge.safetensors")["gram"][-1, -1]) == 72.0  # sums rebuilt on every row


def test_balanced_sample_spreads_over_labels():
    rows = [{"text": f"{label}{i}", "label": label} for label, n in (("a", 50), ("b", 3), ("c", 20)) for i in range(n)]
    picked = balanced_sample(rows, 20, seed=1)
    counts = {label: sum(r["label"] == label for r in picked) for label in "abc"}
    assert len(picked) == 20 and counts["b"] == 3 and abs(counts["a"] - counts["c"]) <= 1
    assert balanced_sample(rows, 20, seed=1) == picked


def logits_of(path, tokenizer, texts) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    return session.run(["logits"], {"input_ids": encoded["input_ids"].astype(np.int64),
                                    "attention_mask": encoded["attention_mask"].astype(np.int64)})[0]


def test_frozen_rounds_swap_the_head_into_the_previous_graphs(tiny_model_dir, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=12, n_test=4)
    params = tiny_params(tiny_model_dir, "adapt", epochs=2)
    params["export"]["onnx"] = True
    metrics = run_stream(ws, params)
    assert [m["export_head_only"] for m in metrics] == [False, True]
    phases = [m["phase_seconds"] for m in metrics]
    assert "train" in phases[0] and "quantize" in phases[0] and "train" not in phases[1]
    folder = ws.round_dir(ws.stream()[1]) / "model"
    model, tokenizer = load_classifier(folder, trainable=False)
    texts = ["apple banana pear 3", "dog cat horse 1", "red blue green 7", "car truck bus 2 and more words"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(encoded["input_ids"], encoded["attention_mask"]).numpy()
    fp32 = logits_of(folder / "onnx" / "model.onnx", tokenizer, texts)
    int8 = logits_of(folder / "onnx" / "model.int8.onnx", tokenizer, texts)
    assert fp32.shape == (4, 4) and np.allclose(fp32, expected, atol=1e-4)  # the grown head: 4 classes
    assert (int8.argmax(1) == expected.argmax(1)).mean() >= 0.75
    report = json.loads((folder / "onnx" / "quantization.json").read_text())
    assert report["head_only"] and report["encoder_sha256"] == json.loads(
        (ws.round_dir(ws.stream()[0]) / "model" / "onnx" / "quantization.json").read_text())["encoder_sha256"]


def test_status_costs_lists_each_rounds_phases(tiny_model_dir, tmp_path):
    from continual.rounds.costs import format_costs

    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=12, n_test=4)
    metrics = run_stream(ws, tiny_params(tiny_model_dir, "adapt", epochs=2))
    table = format_costs(metrics).splitlines()
    assert table[0].split()[:4] == ["round", "strategy", "load", "eval_before"] and len(table) == 3
    flat = json.loads(ws.round_metrics_file(ws.stream()[0]).read_text())
    assert set(flat["phase_seconds"]) >= {"load", "train", "head", "evaluate", "write"}

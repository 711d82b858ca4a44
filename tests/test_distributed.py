"""Multi-process rounds (train.processes: 2): two real processes under torch.distributed.run, DDP with gloo over
loopback, against the same rounds in one process. Same seed, same global batch (16 rows, 8 a process; memory
batch 8, 4 a process), replay+ewc (the shipped strategy) over two rounds: round 2 restores the buffer and the
importances round 1 wrote, and grows the head.

Where the two runs may differ, and why the tolerances are what they are:
- Dropout is off in this tiny model. With dropout each rank draws masks for its own rows, which one process
  never draws, and the runs would be equal only in distribution. Everything else random is shared: the batch
  order comes from the round's seed (``SharedBatches``), and rank 0, which alone updates the buffer, keeps one
  process's random stream. So the buffer must be identical, row for row and weight for weight.
- Float summation order: DDP sums the ranks' gradients (gloo all_reduce) where one process sums the same terms
  inside its matmuls, each rank pads only to its own longest text, and EWC's Fisher sums are all_reduced.
  Each step differs in its last bits (float32: ~1e-7 relative), and AdamW carries that on. Measured here
  (`pytest -s` prints it): losses within 1e-6 relative, importances 9e-7 relative (2.7e-5 on 31), head and
  encoder weights within 7e-7 absolute (weights ~0.1-5). Tolerance: rtol 1e-4 and atol 1e-5, over 10x that.
- Attention key biases are the exception: softmax ignores a shift shared by every key, so their gradient is
  zero in exact arithmetic and rounding noise alone moves them, through AdamW's normalised step, differently in
  each run (measured up to 7.4e-6, on values of ~1e-5). They get atol 1e-4.
- Accuracies count argmaxes and must be equal (a logit tie within 1e-6 would flip one example: not seen here).
"""
import csv
import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file

from continual.arrivals.jsonl import read_jsonl
from continual.rounds.round import run_round
from helpers import build_stream, tiny_params

RTOL, ATOL = 1e-4, 1e-5
NOISE_ATOL = 1e-4  # attention key biases: no gradient but rounding noise (see above)


def dropout_free(model_dir, folder):
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def round_params(model_dir, processes: int) -> dict:
    params = tiny_params(model_dir, "replay+ewc", epochs=3, batch_size=16, processes=processes)
    params["strategy"]["replay"]["batch_size_mem"] = 8
    params["export"].update(onnx=False, reference_rows=0)  # rank 0 alone does both, as one process does
    return params


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    model_dir = dropout_free(tiny_model_dir, tmp_path_factory.mktemp("nodrop") / "model")
    out = {}
    for processes in (1, 2):
        # 33 rows: the last global batch holds 1, and leaves rank 1 nothing; round 2 brings class d
        ws = build_stream(tmp_path_factory.mktemp(f"p{processes}"), [["a", "b", "c"], ["c", "d"]], n_train=11)
        started = time.perf_counter()
        metrics = [run_round(ws, key, round_params(model_dir, processes)) for key in ws.stream()]
        print(f"\n{processes} process(es): {time.perf_counter() - started:.1f} s for 2 rounds")
        out[processes] = ws, metrics
    return out


def train_log(ws, key) -> torch.Tensor:
    with open(ws.round_dir(key) / "train_log.csv") as f:
        return torch.tensor([[float(x) for x in row] for row in list(csv.reader(f))[1:]])


def tensors(ws, key, name) -> dict[str, torch.Tensor]:
    return load_file(ws.round_dir(key) / name)


def assert_close(ours: dict, one: dict, what: str) -> None:
    assert ours.keys() == one.keys(), what
    for k in one:
        atol = NOISE_ATOL if k.endswith("attention.self.key.bias") else ATOL
        torch.testing.assert_close(ours[k], one[k], rtol=RTOL, atol=atol, msg=f"{what} {k}")
    gaps = {k: float((ours[k] - one[k]).abs().max()) for k in one if not k.endswith("attention.self.key.bias")}
    worst = max(gaps, key=gaps.get)
    print(f"{what}: largest difference {gaps[worst]:.1e} ({worst}, largest value {float(one[worst].abs().max()):.2g})")


def test_two_processes_measure_what_one_does(runs):
    (ws1, one), (ws2, two) = runs[1], runs[2]
    assert [m["processes"] for m in two] == [2, 2] and [m["processes"] for m in one] == [1, 1]
    for a, b in zip(one, two):
        assert b["accuracy_matrix"] == a["accuracy_matrix"]  # accuracy on every arrival, after every round
        assert b["acc_before_update"] == a["acc_before_update"]
        assert (b["examples"], b["train_rows"], b["buffer_size"]) == (a["examples"], a["train_rows"], a["buffer_size"])
    for key in ws1.stream():
        ours, single = train_log(ws2, key), train_log(ws1, key)
        assert ours.shape == single.shape  # the same number of optimiser steps
        assert_close({"loss": ours[:, 1], "lr": ours[:, 2]}, {"loss": single[:, 1], "lr": single[:, 2]},
                     f"loss curve {key}")


def test_two_processes_write_the_state_one_does(runs):
    (ws1, _), (ws2, _) = runs[1], runs[2]
    for key in ws1.stream():
        assert read_jsonl(ws2.round_dir(key) / "buffer.jsonl") == read_jsonl(ws1.round_dir(key) / "buffer.jsonl")
        assert_close(tensors(ws2, key, "ewc.safetensors"), tensors(ws1, key, "ewc.safetensors"), f"EWC {key}")
        assert_close(tensors(ws2, key, "model/head.safetensors"), tensors(ws1, key, "model/head.safetensors"),
                     f"head {key}")
        assert_close(tensors(ws2, key, "model/model.safetensors"), tensors(ws1, key, "model/model.safetensors"),
                     f"encoder {key}")
        assert not list(ws2.rounds_dir.glob(".*tmp*"))  # one writer, renamed into place


def test_a_batch_that_does_not_split_evenly_is_refused_before_any_process_starts(tmp_path, tiny_model_dir):
    ws = build_stream(tmp_path, [["a", "b"]], n_train=4)
    params = round_params(tiny_model_dir, 2)
    params["train"]["batch_size"] = 15
    with pytest.raises(ValueError, match="train.batch_size is 15, not a multiple of 2"):
        run_round(ws, ws.stream()[0], params)
    params["train"]["batch_size"], params["strategy"]["replay"]["batch_size_mem"] = 16, 5
    with pytest.raises(ValueError, match="batch_size_mem is 5"):
        run_round(ws, ws.stream()[0], params)
    assert not ws.round_dir(ws.stream()[0]).exists()

"""One round: previous model + new arrival -> trained, evaluated round folder, written atomically.

``run_round`` reads as a round runs: load the previous round's model, let the strategy start its own model
and train it (how it trains and what state it keeps are the strategy's alone, ``continual.strategies``),
evaluate on every arrival so far, export (ONNX graphs, the drift monitor's reference), write the folder.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import torch

from continual.arrivals.split import read_split
from continual.model import adapters, distributed
from continual.model.encoder import LogitsOnly, load_classifier, save_classifier
from continual.model.evaluation import accuracy, confusion
from continual.model.trainer import seed_everything
from continual.progress import configure as configure_progress
from continual.rounds.costs import Phases
from continual.rounds.export import export_round
from continual.rounds.launch import launch_round
from continual.rounds.metrics import summarise
from continual.rounds.reference import PendingReference, build_reference
from continual.strategies import RoundContext, RoundInputs, Strategy, make_strategy
from continual.workspace.layout import ROUND_PARAMS, Workspace  # ROUND_PARAMS: what a round's result depends on
from continual.workspace.storage import tree_bytes


def set_threads(train: dict) -> int:
    threads = int(train.get("threads") or 0) or int(os.environ.get("CONTINUAL_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def labels_in_order(ws: Workspace, keys: list[str]) -> list[str]:
    """Labels by first appearance along the stream (sorted within an arrival): ids never move."""
    labels: list[str] = []
    for key in keys:
        for label in sorted({r["label"] for split in ("train", "test") for r in read_split(ws, key, split)}):
            if label not in labels:
                labels.append(label)
    return labels


def load_parent(parent: Path, params: dict):
    """The previous round's model and tokenizer, refused if it was trained with another ``model.adapter``."""
    adapters.check_parent(parent, adapters.adapter_kind(params))
    return load_classifier(parent / "model")


def run_round(ws: Workspace, key: str, params: dict, device: torch.device | None = None) -> dict | None:
    """Train the round for arrival ``key`` and write ``rounds/<key>``; returns its metrics.

    With ``train.processes`` > 1 (and a strategy that trains by gradient steps) the round runs in that many
    processes (``continual.rounds.launch``), which call this again with their ``device``; rank 0 writes the
    round and the other ranks return None."""
    started = time.perf_counter()
    configure_progress(params)  # also in the processes of a multi-process round
    phases = Phases()
    strategy = make_strategy(params)
    keys = ws.keys_up_to(key)
    index, prev = len(keys), (keys[-2] if len(keys) > 1 else None)
    parent = ws.round_dir(prev) if prev else None
    strategy.begin(index, Workspace.arrival_name(key))  # adapt: is this an adapting or a frozen round?
    if device is None and strategy.processes() > 1:
        return launch_round(ws, key, params)
    eval_batch = int(params["train"]["eval_batch_size"])
    threads = set_threads(params["train"])
    seed_everything(int(params["seed"]) + index)
    rank, processes = distributed.rank(), distributed.world()
    labels = labels_in_order(ws, keys)
    tests = {k: read_split(ws, k, "test") for k in keys}
    earlier = lambda: [row for k in keys[:-1] for row in read_split(ws, k, "train")]  # read on demand
    seen = lambda: [row for k in keys for row in read_split(ws, k, "train")]  # every train row so far, on demand

    # Load: the previous round's model, measured on the new arrival before it learns from it.
    acc_before = None
    with phases("load"):
        previous = load_parent(parent, params) if parent else None
    if previous is not None and rank == 0:
        with phases("evaluate_before"):
            acc_before, _ = accuracy(*previous, tests[key], eval_batch, f"round {key}: previous model on it")
    with phases("load"):
        model, tokenizer, new_labels = strategy.start_model(previous, labels)
        del previous  # a strategy that starts afresh frees the previous model here
        context = RoundContext(tokenizer, model.label2id, int(params["model"]["max_length"]))
        wrapped = LogitsOnly(model, tokenizer.pad_token_id)
        if parent is not None:
            strategy.restore(parent, context, wrapped)
        rows = [{**row, "arrival": k} for k in strategy.train_keys(keys) for row in read_split(ws, k, "train")]

    # Train: the strategy's own way.
    trained = strategy.train(wrapped, context, RoundInputs(key, index, parent, new_labels, rows, earlier, seen,
                                                           eval_batch, phases, device))
    if trained is None:  # a rank other than 0 of a multi-process round: rank 0 writes it
        return None

    # Evaluate: on every arrival's test split so far, a new row of the accuracy matrix.
    row, predictions = [], {}
    with phases("evaluate"):
        for k in keys:
            acc, predictions[k] = accuracy(model, tokenizer, tests[k], eval_batch, f"round {key}: evaluate on {k}")
            row.append(acc)
    previous_metrics = json.loads((parent / "metrics.json").read_text()) if parent else None
    matrix = [*(previous_metrics["accuracy_matrix"] if previous_metrics else []), row]
    metrics = {
        "round": index, "key": key, "strategy": strategy.name, "arrivals": keys, "accuracy_matrix": matrix,
        **summarise(matrix, keys),
        "acc_before_update": acc_before,
        "examples": trained.log.examples, "train_rows": trained.rows,
        "examples_per_s": trained.log.examples / trained.log.seconds if trained.log.seconds else 0.0,
        "train_seconds": trained.log.seconds, "threads": threads, "processes": processes,
        "trainable_params": trained.trainable_params,
        "confusion": confusion(tests[key], predictions[key], model.labels),
    }
    round_info = {
        "key": key, "index": index, "arrival": Workspace.arrival_name(key), "parent": prev, "strategy": strategy.name,
        "labels": list(model.labels), "data_hash": ws.arrival_hash(key),
        "params": {name: params[name] for name in ROUND_PARAMS},
    }

    # Export: what the server's drift monitor compares traffic with, and the ONNX graphs (in write_round).
    reference = None
    if int(params["export"].get("reference_rows", 0)) > 0:
        with phases("reference"):
            reference = PendingReference(*build_reference(model, tokenizer, seen(), tests, matrix,
                                                          int(params["export"]["reference_rows"]),
                                                          int(params["seed"]) + index, eval_batch), eval_batch)
    on_int8 = reference.add_int8 if reference is not None else None  # for a server that serves the int8 graph
    parent_model = parent / "model" if parent else None  # its graphs are reused if only the head changed
    export = (lambda folder: export_round(model, tokenizer, folder, tests, metrics["acc"], params["export"],
                                          eval_batch, predictions, on_int8, parent_model)) \
        if params["export"]["onnx"] else None

    # Write.
    write_round(ws, key, model, tokenizer, strategy, context, trained.log.rows, metrics, round_info, started,
                export, reference, phases)
    return metrics


def write_round(ws: Workspace, key: str, model, tokenizer, strategy: Strategy, context: RoundContext, log_rows,
                metrics: dict, round_info: dict, started: float, export=None,
                reference: PendingReference | None = None, phases: Phases | None = None) -> None:
    """Write into a temporary sibling folder and rename it: a crash never leaves a round that looks whole."""
    phases = phases or Phases()
    begin = time.perf_counter()
    final = ws.round_dir(key)
    tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_classifier(model, tokenizer, tmp / "model", round_info["params"]["model"]["base"])
    if export is not None:  # ONNX fp32 + int8 beside the weights, and int8 accuracy on every test split
        report = export(tmp / "model")
        metrics["int8_acc"], metrics["int8_drop"] = report["int8"], report["drop"]
        metrics["int8_agreement"] = report["agreement"]
        metrics["export_seconds"] = sum(report["seconds"].values())
        metrics["export_head_only"] = report["head_only"]
        for name, seconds in report["seconds"].items():
            phases.add(name, seconds)
    if reference is not None:  # after the export: it adds the int8 graph's embeddings
        reference.reference.save(tmp / "model")
    metrics.update(strategy.save(tmp, context))
    metrics.setdefault("buffer_size", 0)
    with open(tmp / "train_log.csv", "w", newline="") as f:
        csv.writer(f).writerows([("step", "loss", "lr"), *log_rows])
    (tmp / "round.json").write_text(json.dumps(round_info, indent=2) + "\n")
    metrics["wall_seconds"] = time.perf_counter() - started
    phases.add("write", time.perf_counter() - begin - metrics.get("export_seconds", 0.0))
    metrics["phase_seconds"] = phases.ordered()
    metrics["round_bytes"] = tree_bytes(tmp)  # all but metrics.json itself
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    ws.metrics_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: metrics[k] for k in ("avg_acc", "forgetting_avg", "forgetting_max", "bwt", "acc_before_update",
                                    "examples_per_s", "wall_seconds", "buffer_size", "round_bytes")}
    flat["acc"], flat["forgetting"] = metrics["acc"], metrics["forgetting"]
    flat["phase_seconds"] = metrics["phase_seconds"]
    for name in ("ridge_lambda", "head_refit_lambda"):  # the λ a ridge solve chose (strategy.ridge.lambda: auto)
        if metrics.get(name) is not None:
            flat[name] = metrics[name]
    if "int8_acc" in metrics:  # `dvc metrics show` / `dvc exp show` list the int8 graph beside fp32
        flat["int8_acc"], flat["int8_max_drop"] = metrics["int8_acc"], max(metrics["int8_drop"].values())
    (ws.round_metrics_file(key)).write_text(json.dumps(flat, indent=2) + "\n")

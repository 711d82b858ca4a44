"""One round: previous model + new arrival -> trained, evaluated round folder, written atomically."""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import time

import numpy as np
import torch

from continual.model import adapters

from continual.model import distributed
from continual.model.evaluation import accuracy, confusion
from continual.rounds.export import export_round
from continual.rounds.costs import Phases
from continual.model.head import HeadRefit
from continual.arrivals.ingest import read_split
from continual.rounds.metrics import summarise
from continual.progress import configure as configure_progress
from continual.rounds.reference import PendingReference, build_reference
from continual.workspace.storage import tree_bytes
from continual.model.encoder import (LogitsOnly, base_model_path, embed_rows, grow_head, load_classifier, new_classifier,
                             set_prototype_rows)
from continual.strategies import RoundContext, make_strategy
from continual.model.trainer import ProgressLog, train_one_experience
from continual.workspace.layout import ROUND_PARAMS, Workspace  # ROUND_PARAMS: what a round's result depends on


def set_threads(train: dict) -> int:
    threads = int(train.get("threads") or 0) or int(os.environ.get("CONTINUAL_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def labels_in_order(ws: Workspace, keys: list[str]) -> list[str]:
    """Labels by first appearance along the stream (sorted within an arrival): ids never move."""
    labels: list[str] = []
    for key in keys:
        for label in sorted({r["label"] for split in ("train", "test") for r in read_split(ws, key, split)}):
            if label not in labels:
                labels.append(label)
    return labels


def run_round(ws: Workspace, key: str, params: dict, device: torch.device | None = None) -> dict | None:
    """Train the round for arrival ``key`` and write ``rounds/<key>``; returns its metrics.

    With ``train.processes`` > 1 the round runs in that many processes (``continual.model.distributed``), which call
    this again with their ``device``; rank 0 writes the round and the other ranks return None."""
    started = time.perf_counter()
    configure_progress(params)  # also in the processes of a multi-process round
    phases = Phases()
    strategy = make_strategy(params)
    keys = ws.keys_up_to(key)
    index, prev = len(keys), (keys[-2] if len(keys) > 1 else None)
    strategy.begin(index, Workspace.arrival_name(key))  # adapt: is this an adapting or a frozen round?
    if device is None and not strategy.closed_form and distributed.processes(params) > 1:
        return distributed.launch_round(ws, key, params)  # closed-form rounds train nothing: one process
    train, max_length = params["train"], int(params["model"]["max_length"])
    eval_batch = int(train["eval_batch_size"])
    threads = set_threads(train)
    seed_everything(int(params["seed"]) + index)
    rank, processes = distributed.rank(), distributed.world()
    adapter = adapters.adapter_kind(params)
    if adapter != "none" and strategy.closed_form and not strategy.keeps_encoder:
        raise ValueError(f"strategy {strategy.name} keeps the encoder frozen and trains no weights of it: "
                         f"model.adapter: {adapter} has nothing to adapt. Set model.adapter: none")
    labels = labels_in_order(ws, keys)
    tests = {k: read_split(ws, k, "test") for k in keys}
    seen = lambda: [row for k in keys for row in read_split(ws, k, "train")]  # noqa: E731 (read on demand)

    acc_before = None
    with phases("load"):
        if prev is not None:
            adapters.check_parent(ws.round_dir(prev), adapter)
            model, tokenizer = load_classifier(ws.round_dir(prev) / "model")
    if prev is not None and rank == 0:
        with phases("evaluate_before"):
            acc_before, _ = accuracy(model, tokenizer, tests[key], eval_batch, f"round {key}: previous model on it")
    with phases("load"):
        if prev is None or strategy.from_base or (strategy.closed_form and not strategy.keeps_encoder):
            # ncm and ridge keep the pretrained encoder frozen: their state is the sums, not the weights.
            model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), labels, max_length)
            new_labels = labels
            if adapter == "lora":  # closed-form strategies with lora were refused above
                adapters.attach(model, params)
        else:
            new_labels = grow_head(model, labels)
        strategy.prepare_model(model, index)  # olora: this round's own adapter, the earlier ones frozen
        adapters.for_training(model, params)  # a no-op unless lora with gradient checkpointing
        context = RoundContext(tokenizer, model.label2id, max_length)
        wrapped = LogitsOnly(model, tokenizer.pad_token_id)
        if prev is not None and not strategy.from_base:
            strategy.restore(ws.round_dir(prev), context, wrapped.model if strategy.closed_form else wrapped)
        rows = [{**row, "arrival": k} for k in strategy.train_keys(keys) for row in read_split(ws, k, "train")]
    refit = None
    if strategy.closed_form:
        with phases("head"):
            progress = fit_closed_form(strategy, model, tokenizer, rows, eval_batch, f"round {key}: embed")
    else:
        rows = strategy.training_rows(rows, lambda: [row for k in keys[:-1] for row in read_split(ws, k, "train")])
        targets = [model.label2id[r["label"]] for r in rows]
        if new_labels:  # a new class's row starts at its prototype under the current encoder
            with phases("prototypes"):
                features = embed_rows(model, tokenizer, [r["text"] for r in rows], eval_batch,
                                      f"round {key}: prototypes")
                set_prototype_rows(model, features, targets, [model.label2id[x] for x in new_labels],
                                   float(train["prototype_scale"]))
        dataset = context.dataset(rows)
        steps = -(-len(rows) // int(train["batch_size"]))
        if rank:  # its own dropout masks; rank 0 keeps one process's random stream
            seed_everything(int(params["seed"]) + index + 7919 * rank)
        begin = time.perf_counter()
        progress = train_one_experience(wrapped, dataset, adapters.train_settings(params), strategy.plugins(), steps,
                                        index - 1, desc=f"round {index} {key} [{strategy.name}]",
                                        seed=int(params["seed"]) + index, device=device)
        phases.add("train", progress.seconds)
        phases.add("after_training", progress.closing_seconds)
        phases.add("train_setup", time.perf_counter() - begin - progress.seconds - progress.closing_seconds)
        distributed.leave()  # the last collective was EWC's Fisher sums: rank 0 goes on alone
        if rank:
            return None
        with phases("head"):
            if not strategy.after_training(model, tokenizer, seen, eval_batch) and not strategy.from_base:
                refit = HeadRefit(params)  # joint has all the data at hand: no lean to undo
                if prev is not None:
                    refit.restore(ws.round_dir(prev))
                refit.apply(model, tokenizer, rows, strategy.memory_rows(context),
                            bool(new_labels) and prev is not None, eval_batch)

    row, predictions = [], {}
    with phases("evaluate"):
        for k in keys:
            acc, predictions[k] = accuracy(model, tokenizer, tests[k], eval_batch, f"round {key}: evaluate on {k}")
            row.append(acc)
    previous = json.loads((ws.round_dir(prev) / "metrics.json").read_text()) if prev else None
    matrix = [*(previous["accuracy_matrix"] if previous else []), row]

    metrics = {
        "round": index, "key": key, "strategy": strategy.name, "arrivals": keys, "accuracy_matrix": matrix,
        **summarise(matrix, keys),
        "acc_before_update": acc_before,
        "examples": progress.examples, "train_rows": len(rows),
        "examples_per_s": progress.examples / progress.seconds if progress.seconds else 0.0,
        "train_seconds": progress.seconds, "threads": threads, "processes": processes,
        "trainable_params": 0 if strategy.closed_form else sum(p.numel() for p in model.parameters()
                                                               if p.requires_grad),
        "confusion": confusion(tests[key], predictions[key], model.labels),
    }
    round_info = {
        "key": key, "index": index, "arrival": Workspace.arrival_name(key), "parent": prev, "strategy": strategy.name,
        "labels": list(model.labels), "data_hash": ws.arrival_hash(key),
        "params": {name: params[name] for name in ROUND_PARAMS},
    }
    reference = None
    if int(params["export"].get("reference_rows", 0)) > 0:  # what the server's drift monitor compares traffic with
        with phases("reference"):
            reference = PendingReference(*build_reference(model, tokenizer, seen(), tests, matrix,
                                                          int(params["export"]["reference_rows"]),
                                                          int(params["seed"]) + index, eval_batch), eval_batch)
    on_int8 = reference.add_int8 if reference is not None else None  # for a server that serves the int8 graph
    parent_model = ws.round_dir(prev) / "model" if prev else None  # its graphs are reused if only the head changed
    export = (lambda folder: export_round(model, tokenizer, folder, tests, metrics["acc"], params["export"],
                                          eval_batch, predictions, on_int8, parent_model)) \
        if params["export"]["onnx"] else None
    write_round(ws, key, model, tokenizer, strategy, context, progress.rows, metrics, round_info, started, refit,
                export, reference, phases)
    return metrics


def fit_closed_form(strategy, model, tokenizer, rows: list[dict], batch_size: int, desc: str = "embed") -> ProgressLog:
    """One forward pass over the arrival (its progress bar: ``desc``), then the head is solved from the strategy's
    sums."""
    progress = ProgressLog(f"{strategy.name} forward pass")
    begin = time.perf_counter()
    strategy.prepare(model, len(model.labels))
    features = embed_rows(model, tokenizer, [r["text"] for r in rows], batch_size, desc)
    strategy.fit(model, features, torch.tensor([model.label2id[r["label"]] for r in rows]))
    progress.examples, progress.seconds = len(rows), time.perf_counter() - begin
    return progress


def write_round(ws: Workspace, key: str, model, tokenizer, strategy, context, log_rows, metrics: dict,
                round_info: dict, started: float, refit: HeadRefit | None = None, export=None,
                reference: PendingReference | None = None, phases: Phases | None = None) -> None:
    """Write into a temporary sibling folder and rename it: a crash never leaves a round that looks whole."""
    phases = phases or Phases()
    begin = time.perf_counter()
    final = ws.round_dir(key)
    tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if adapters.adapter_names(model):  # a LoRA round: adapters and head, no encoder weight
        adapters.save(model, tmp / "model", round_info["params"]["model"]["base"])
    else:
        model.save(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
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
    if refit is not None:
        refit.save(tmp)
        if refit.chosen is not None:
            metrics["head_refit_lambda"] = refit.chosen
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

"""Every finished round becomes an MLflow run in its lineage, and its model a version of the registered model.

In the experiment (``tracking.experiment``) there is one *lineage* run per stream lineage: the strategy,
a hash of the round's params and the workspace's identity (tag ``continual.lineage``). Each round is a
run nested under it (tag ``mlflow.parentRunId``). The lineage run gets the round metrics again with
``step = round index``, so one chart shows avg accuracy and forgetting against rounds, and the lineage
runs of two strategies overlay.

A round's run is identified by its folder's content (``continual.registry.round_folder``). The track stage,
which always runs after the rounds, calls ``reconcile``: for every round of the current stream, exactly one
run with that round hash exists in the round's lineage; a missing one is logged from the round folder, a
present one is left as it is. ``log_round`` obeys the same rule (a second call logs nothing). The hash tag is
written last, so a run that failed half way does not count as logged and is logged again next time.
A round retrained with the same params but other content (an edited arrival) is a new run in the same
lineage, and its numbers become a second point at that round's step on the lineage run.

``mlflow`` is imported inside functions: importing this module must stay cheap for ``continual --help``.
"""
from __future__ import annotations

import csv
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from continual.progress import ticking
from continual.registry.abandoned import close_abandoned_runs
from continual.registry.connect import Tracking
from continual.registry.model_name import registered_model
from continual.registry.register import claim_name, register_round
from continual.registry.round_folder import RoundFolder, find_round_run, finished_rounds, lineage
from continual.registry.tags import (FOLDER_TAG, GIT_COMMIT_TAG, KIND_TAG, LINEAGE_TAG, PARENT_ROUND_TAG,
                                     PARENT_RUN_TAG, ROUND_HASH_TAG, RUN_ARRIVAL_TAG, RUN_DATA_HASH_TAG,
                                     RUN_ROUND_INDEX_TAG, RUN_ROUND_KEY_TAG, STRATEGY_TAG)
from continual.workspace.layout import Workspace

LINEAGE_PLOTS = ("accuracy_matrix.png", "forgetting_curve.png")


def log_round(ws: Workspace, key: str, params: dict[str, Any]) -> str:
    """Log round ``key`` (its folder complete) as a run in its lineage and register its model.

    Returns the run id; logs nothing when this folder content already has a run (module docstring).
    """
    store = Tracking(ws, params)
    folder = RoundFolder.read(ws, key)
    return find_round_run(store.client, store.experiment_id, ws, folder) or _log(store, folder)


def reconcile(store: Tracking) -> dict[str, str]:
    """Log every finished round of the current stream that has no run yet; return {round key: new run id}.

    A stream key without a finished folder (its round has not run yet) is left for a later call. Call it
    holding the registry lock (the track stage does): it closes the runs a killed track stage left open."""
    ws, params = store.ws, store.params
    keys = finished_rounds(ws)
    if not keys:
        print("tracking: no finished round to log")
        return {}
    for note in close_abandoned_runs(store):
        print(f"tracking: {note}")
    logged = {}
    for key in keys:
        folder = RoundFolder.read(ws, key)
        if find_round_run(store.client, store.experiment_id, ws, folder) is None:
            with ticking(f"tracking: logging round {key} (metrics, plots, model)"):
                logged[key] = _log(store, folder)
    if logged:
        # Rounds may have been logged out of order: the lineage run's plots must show the whole stream.
        parent_id = _lineage_run(store, folder.info)  # folder: the stream's last finished round
        with tempfile.TemporaryDirectory() as tmp:
            _draw_plots(ws, folder, Path(tmp), params)
            for name in LINEAGE_PLOTS:
                store.client.log_artifact(parent_id, str(Path(tmp) / name), "plots")
    print(f"tracking: {len(keys)} rounds in the stream, {len(logged)} were missing from MLflow and are now logged")
    return logged


def round_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json under MLflow names; a null (acc_before_update in round 1) or absent value is left out."""
    values: dict[str, Any] = {f"acc.{k}": v for k, v in metrics["acc"].items()}
    values |= {f"forgetting.{k}": v for k, v in metrics["forgetting"].items()}
    values |= {f"int8_acc.{k}": v for k, v in (metrics.get("int8_acc") or {}).items()}  # the round's int8 ONNX
    values |= {f"int8_drop.{k}": v for k, v in (metrics.get("int8_drop") or {}).items()}
    values |= {f"phase_seconds.{k}": v for k, v in (metrics.get("phase_seconds") or {}).items()}  # rounds/costs.py
    values |= {
        "avg_acc": metrics.get("avg_acc"),
        "forgetting.avg": metrics.get("forgetting_avg"),
        "forgetting.max": metrics.get("forgetting_max"),
        "bwt": metrics.get("bwt"),
        "acc_before_update": metrics.get("acc_before_update"),
        "examples": metrics.get("examples"),
        "examples_per_s": metrics.get("examples_per_s"),
        "train_seconds": metrics.get("train_seconds"),
        "wall_seconds": metrics.get("wall_seconds"),
        "buffer_size": metrics.get("buffer_size"),
        "int8_max_drop": max(metrics["int8_drop"].values()) if metrics.get("int8_drop") else None,
        "export_seconds": metrics.get("export_seconds"),
        "round_bytes": metrics.get("round_bytes"),  # the round folder on disk (LoRA: adapters, not a model)
        "trainable_params": metrics.get("trainable_params"),
        "ridge_lambda": metrics.get("ridge_lambda"),  # the λ the ridge head used (strategy.ridge.lambda: auto)
        "head_refit_lambda": metrics.get("head_refit_lambda"),
    }
    return {name: float(value) for name, value in values.items() if value is not None}


# -- logging one round ------------------------------------------------------------------------------------
def _log(store: Tracking, folder: RoundFolder) -> str:
    import mlflow
    from mlflow.entities import Metric, Param

    client, ws, params = store.client, store.ws, store.params
    info, index = folder.info, folder.info["index"]
    register = params["tracking"].get("register_models", True)  # `continual compare` scratch streams: off
    model = registered_model(ws, params)
    if register:  # before anything is logged: a name another stream owns is refused at its first round
        claim_name(store, model)
    parent_id = _lineage_run(store, info)
    tags = {
        PARENT_RUN_TAG: parent_id,
        KIND_TAG: "round",
        LINEAGE_TAG: lineage(ws, info),
        RUN_ROUND_KEY_TAG: folder.key,
        RUN_ROUND_INDEX_TAG: str(index),
        RUN_ARRIVAL_TAG: info["arrival"],
        RUN_DATA_HASH_TAG: info["data_hash"],
        PARENT_ROUND_TAG: info["parent"] or "",
        STRATEGY_TAG: info["strategy"],
        GIT_COMMIT_TAG: _git_commit(ws.root),
    }
    run_id = client.create_run(store.experiment_id, run_name=folder.key, tags=tags).info.run_id
    now = int(time.time() * 1000)
    scalars = [Metric(name, value, now, index) for name, value in round_metrics(folder.metrics).items()]
    # The fluent run is what log_model writes into; leaving the block marks the run FINISHED (FAILED on error).
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        client.log_batch(
            run_id,
            metrics=scalars + _training_log(folder.path / "train_log.csv", now),
            params=[Param(name, value) for name, value in _flatten(info["params"]).items()],
        )
        _draw_plots(ws, folder, Path(tmp), params)
        client.log_artifacts(run_id, tmp, "plots")
        client.log_artifact(run_id, str(folder.path / "metrics.json"))
        client.log_artifact(run_id, str(folder.path / "round.json"))
        version = register_round(store, folder, model, run_id) if register else None
        client.log_batch(parent_id, metrics=scalars)
        for name in LINEAGE_PLOTS:
            client.log_artifact(parent_id, str(Path(tmp) / name), "plots")
        client.set_tag(run_id, ROUND_HASH_TAG, folder.round_hash)  # last: only a complete run counts as logged
    registered = f", model {model} v{version}" if version else ""
    print(f"tracking: round {folder.key} -> run {run_id}{registered}")
    return run_id


def _lineage_run(store: Tracking, info: dict[str, Any]) -> str:
    from mlflow.entities import Param

    client, ws = store.client, store.ws
    line = lineage(ws, info)
    query = f"tags.`{KIND_TAG}` = 'lineage' and tags.`{LINEAGE_TAG}` = '{line}'"
    found = client.search_runs([store.experiment_id], query, max_results=1)
    if found:
        if not found[0].data.params:  # created, then killed before its params were logged
            client.log_batch(found[0].info.run_id,
                             params=[Param(name, value) for name, value in _flatten(info["params"]).items()])
        return found[0].info.run_id
    tags = {KIND_TAG: "lineage", LINEAGE_TAG: line, STRATEGY_TAG: info["strategy"], FOLDER_TAG: str(ws.home)}
    run_id = client.create_run(store.experiment_id, run_name=line.rsplit(":", 1)[0], tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(name, value) for name, value in _flatten(info["params"]).items()])
    client.set_terminated(run_id)  # rounds append to it later; it is never "running" in between
    return run_id


def _training_log(path: Path, timestamp: int) -> list:
    from mlflow.entities import Metric

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [Metric(name, float(row[column]), timestamp, int(row["step"]))
            for row in rows for name, column in (("train.loss", "loss"), ("train.lr", "lr"))]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _git_commit(root: Path) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):  # no git, no repository, or no commit yet
        return "uncommitted"
    return done.stdout.strip()


# -- plots (matplotlib's Figure directly: no pyplot state, no display backend) --------------------------
def _draw_plots(ws: Workspace, folder: RoundFolder, out: Path, params: dict[str, Any]) -> None:
    from continual.reports.plots import CONFUSION_CLASSES, plot_accuracy_matrix, plot_confusion, plot_curves

    metrics = folder.metrics
    keys = metrics["arrivals"]
    plot_accuracy_matrix(metrics["accuracy_matrix"], keys, out / "accuracy_matrix.png")
    history = [metrics if k == folder.key else json.loads((ws.round_dir(k) / "metrics.json").read_text()) for k in keys]
    plot_curves(history, out / "forgetting_curve.png")
    confusion = metrics["confusion"]
    plot_confusion(confusion["matrix"], confusion["labels"], f"confusion on {folder.key} (row: true, column: "
                   "predicted)", out / "confusion_matrix.png",
                   int((params.get("tracking") or {}).get("confusion_classes", CONFUSION_CLASSES)))

"""Every finished round becomes an MLflow run, and its model a version of the registered model.

In the experiment (``tracking.experiment``) there is one *lineage* run per stream lineage: the strategy,
a hash of the round's params and the workspace's identity (tag ``continual.lineage``). Each round is a
run nested under it (tag ``mlflow.parentRunId``). The lineage run gets the round metrics again with
``step = round index``, so one chart shows avg accuracy and forgetting against rounds, and the lineage
runs of two strategies overlay.

DVC run-cache rule: ``dvc repro`` may restore a round folder from its run cache without running the
round stage, so that stage's ``log_round`` call never happens. A round's run is therefore identified by
the folder's content, not by the act of training: its tag ``continual.round_hash`` is the sha256 of the
folder's metrics.json bytes followed by its round.json bytes. The track stage, which always runs after
the rounds, calls ``reconcile``: for every round of the current stream, exactly one run with that round
hash exists in the round's lineage; a missing one is logged from the round folder, a present one is left
as it is. ``log_round`` obeys the same rule (a second call logs nothing). The hash tag is written last,
so a run that failed half way does not count as logged and is logged again next time.

Training never waits on MLflow: the round stage only writes its folder, so a tracking outage fails the
track stage (in seconds, see ``FAIL_FAST``) and costs a retry of the logging, never a retrain.
A round retrained with the same params but other content (an edited arrival) is a new run in the same
lineage, and its numbers become a second point at that round's step on the lineage run.

``mlflow`` is imported inside functions: importing this module must stay cheap for ``continual --help``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continual.registry import local_store
from continual.registry.model_name import WORKSPACE_TAG, NameTaken, registered_model, refuse_if_owned_elsewhere
from continual.progress import ticking
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

KIND_TAG = "continual.kind"  # "lineage" | "round"
LINEAGE_TAG = "continual.lineage"
ROUND_HASH_TAG = "continual.round_hash"
ABANDONED_TAG = "continual.abandoned"  # a round run whose logging was cut short; the round was logged again
DECISION_TAG = "promotion.decision"  # as continual.registry.promotion writes it (which imports this module)
# What the served model needs, pinned to what trained it; listed by hand because MLflow's inference of
# requirements imports every candidate package (torchvision included) and takes seconds.
SERVED_PACKAGES = ("mlflow", "transformers", "torch", "tokenizers", "safetensors", "pandas")
LINEAGE_PLOTS = ("accuracy_matrix.png", "forgetting_curve.png")


@dataclass(frozen=True)
class RoundFolder:
    """A finished round as its folder records it: round.json, metrics.json and their content hash."""

    key: str
    path: Path
    info: dict[str, Any]
    metrics: dict[str, Any]
    round_hash: str

    @classmethod
    def read(cls, ws: Workspace, key: str) -> "RoundFolder":
        path = ws.round_dir(key)
        metrics_bytes = (path / "metrics.json").read_bytes()
        info_bytes = (path / "round.json").read_bytes()
        digest = hashlib.sha256(metrics_bytes + info_bytes).hexdigest()
        return cls(key, path, json.loads(info_bytes), json.loads(metrics_bytes), digest)


class TrackingUnavailable(ValueError):
    """The tracking store did not answer: nothing was logged, and the round folders are untouched."""


# MLflow's own defaults (7 retries with backoff factor 2, 120 s per request: minutes) are for riding out
# rate limits; here a dead server must fail the track stage in seconds, and the next `dvc repro` retries
# it. Names as mlflow/environment_variables.py (3.17) reads them, at each request. A value the user set wins.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri(ws: Workspace, params: dict[str, Any]) -> str:
    """Where this workspace tracks: ``$MLFLOW_TRACKING_URI``, else ``tracking.uri``, else its own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (params.get("tracking") or {}).get("uri") or _local_store(ws)


def _local_store(ws: Workspace) -> str:
    return local_store.store_uri(ws)


def _fail_fast() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for variable, value in FAIL_FAST.items():
        os.environ.setdefault(variable, value)


def check_server(uri: str) -> None:
    """For `continual init`: an http(s) tracking server must answer now (with these credentials), or
    TrackingUnavailable says so. Other stores (a database file, a SQLAlchemy URL) are not contacted."""
    if not uri.lower().startswith(("http://", "https://")):
        return
    _fail_fast()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as error:
        raise TrackingUnavailable(
            f"the MLflow tracking server {uri} did not answer ({str(error).splitlines()[0][:300]}). Start it (or "
            "fix its address or credentials), or unset MLFLOW_TRACKING_URI / leave out --tracking-uri to track "
            "in the workspace's own SQLite store; nothing was created") from error


def connect(ws: Workspace, params: dict[str, Any]) -> tuple["MlflowClient", str]:
    """Point MLflow at the workspace's store; return a client and the experiment id.

    Raises TrackingUnavailable when the store does not answer its first request."""
    _fail_fast()
    import mlflow
    from mlflow.exceptions import MlflowException

    from continual.registry.race_safe_client import RaceSafeClient

    uri = tracking_uri(ws, params)
    local_store.follow_move(ws, uri)  # a moved or copied workspace: its store's locations point here first
    mlflow.set_tracking_uri(uri)  # the fluent log_model call writes wherever this points
    client = RaceSafeClient(uri)
    name = params["tracking"]["experiment"]
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as error:
        raise TrackingUnavailable(
            f"MLflow at {uri} did not answer ({str(error).splitlines()[0][:300]}). The trained rounds are kept: "
            "run `dvc repro` again (only the track stage reruns) once the tracking server is back") from error
    if experiment is not None:
        return client, experiment.experiment_id
    # A local store keeps its artifacts beside its database; a configured server chooses its own place.
    location = local_store.artifact_location(ws) if local_store.is_store_of(ws, uri) else None
    try:
        return client, client.create_experiment(name, artifact_location=location)
    except MlflowException as error:  # on a shared server, another stream's first track stage created it just now
        if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
        return client, client.get_experiment_by_name(name).experiment_id


def lineage(ws: Workspace, info: dict[str, Any]) -> str:
    """``strategy:params-hash:workspace``: rounds trained alike in one workspace share a lineage run."""
    params_hash = hashlib.sha256(json.dumps(info["params"], sort_keys=True).encode()).hexdigest()
    return f"{info['strategy']}:{params_hash[:12]}:{ws.identity[:12]}"


def round_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json under MLflow names; a null (acc_before_update in round 1) or absent value is left out."""
    values: dict[str, Any] = {f"acc.{k}": v for k, v in metrics["acc"].items()}
    values |= {f"forgetting.{k}": v for k, v in metrics["forgetting"].items()}
    values |= {f"int8_acc.{k}": v for k, v in (metrics.get("int8_acc") or {}).items()}  # the round's int8 ONNX
    values |= {f"int8_drop.{k}": v for k, v in (metrics.get("int8_drop") or {}).items()}
    values |= {f"phase_seconds.{k}": v for k, v in (metrics.get("phase_seconds") or {}).items()}  # continual/rounds/costs.py
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


def find_round_run(client: "MlflowClient", experiment_id: str, ws: Workspace, folder: RoundFolder) -> str | None:
    """The run logged for exactly this folder content in its lineage, if any."""
    query = (
        f"tags.`{KIND_TAG}` = 'round' and tags.`{LINEAGE_TAG}` = '{lineage(ws, folder.info)}'"
        f" and tags.`{ROUND_HASH_TAG}` = '{folder.round_hash}'"
    )
    runs = client.search_runs([experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def log_round(ws: Workspace, key: str, params: dict[str, Any]) -> str:
    """Log round ``key`` (its folder complete) as a run in its lineage and register its model.

    Returns the run id; logs nothing when this folder content already has a run (module docstring).
    """
    client, experiment_id = connect(ws, params)
    folder = RoundFolder.read(ws, key)
    return find_round_run(client, experiment_id, ws, folder) or _log(client, experiment_id, ws, folder, params)


def reconcile(ws: Workspace, params: dict[str, Any]) -> dict[str, str]:
    """Log every finished round of the current stream that has no run yet; return {round key: new run id}.

    A stream key without a finished folder (its round has not run yet) is left for a later call."""
    keys = [key for key in ws.stream() if (ws.round_dir(key) / "metrics.json").exists()]
    if not keys:
        print("tracking: no finished round to log")
        return {}
    client, experiment_id = connect(ws, params)
    for note in close_abandoned_runs(client, experiment_id, ws, params):
        print(f"tracking: {note}")
    logged = {}
    for key in keys:
        folder = RoundFolder.read(ws, key)
        if find_round_run(client, experiment_id, ws, folder) is None:
            with ticking(f"tracking: logging round {key} (metrics, plots, model)"):
                logged[key] = _log(client, experiment_id, ws, folder, params)
    if logged:
        # Rounds may have been logged out of order: the lineage run's plots must show the whole stream.
        last = RoundFolder.read(ws, keys[-1])
        parent_id = _lineage_run(client, experiment_id, ws, last.info)
        with tempfile.TemporaryDirectory() as tmp:
            _draw_plots(ws, last, Path(tmp), params)
            for name in LINEAGE_PLOTS:
                client.log_artifact(parent_id, str(Path(tmp) / name), "plots")
    print(f"tracking: {len(keys)} rounds in the stream, {len(logged)} were missing from MLflow and are now logged")
    return logged


def close_abandoned_runs(client: "MlflowClient", experiment_id: str, ws: Workspace, params: dict[str, Any]) -> list[str]:
    """Close what a track stage killed half way left open in this workspace's lineages; one note each.

    - a run still RUNNING that had finished its work (a lineage run, or a round run that carries its round
      hash, written last) -> FINISHED;
    - a round run without its round hash (RUNNING after a kill, FAILED after an outage) was never complete:
      ``reconcile`` logs that round again, so this run is tagged ``continual.abandoned``, ended FAILED, and
      the model version it may have registered is marked refused by the gate, never to be gated or served.

    Call it holding the registry lock (the track stage does): in one workspace no other process logs meanwhile.
    """
    mine = f"tags.`{LINEAGE_TAG}` LIKE '%:{ws.identity[:12]}'"
    runs = [run for status in ("RUNNING", "FAILED")
            for run in client.search_runs([experiment_id], f"{mine} and attributes.status = '{status}'",
                                          max_results=1000)]
    name = registered_model(ws, params)
    notes = []
    for run in runs:
        tags, run_id = run.data.tags, run.info.run_id
        complete = tags.get(KIND_TAG) == "lineage" or ROUND_HASH_TAG in tags
        if complete:
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, "FINISHED")
                notes.append(f"closed run {run_id} ({run.info.run_name}), left RUNNING by a killed track stage")
            continue
        if ABANDONED_TAG in tags:
            continue
        versions = (client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                    if params["tracking"].get("register_models", True) else [])
        reason = (f"abandoned: the track stage logging round {tags.get('continual.round_key', '?')} was cut short "
                  f"(run {run_id}); the round was logged again in a run of its own")
        for version in versions:
            if DECISION_TAG not in version.tags:
                client.set_model_version_tag(name, version.version, "promotion.reasons", reason)
                client.set_model_version_tag(name, version.version, DECISION_TAG, "refused")
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
        client.set_tag(run_id, ABANDONED_TAG, reason)
        shown = f", its model version{'s' if len(versions) > 1 else ''} {', '.join(str(v.version) for v in versions)} refused" if versions else ""
        notes.append(f"run {run_id} ({run.info.run_name}) was cut short: marked abandoned{shown}")
    return notes


# -- logging one round ------------------------------------------------------------------------------------
def _log(client: "MlflowClient", experiment_id: str, ws: Workspace, folder: RoundFolder, params: dict) -> str:
    import mlflow
    from mlflow.entities import Metric, Param

    info, index = folder.info, folder.info["index"]
    register = params["tracking"].get("register_models", True)  # `continual compare` scratch streams: off
    model = registered_model(ws, params)
    if register:  # before anything is logged: a name another stream owns is refused at its first round
        refuse_if_owned_elsewhere(client, ws, model, params, mlflow.get_tracking_uri())
    line = lineage(ws, info)
    parent_id = _lineage_run(client, experiment_id, ws, info)
    tags = {
        "mlflow.parentRunId": parent_id,
        KIND_TAG: "round",
        LINEAGE_TAG: line,
        "continual.round_key": folder.key,
        "continual.round_index": str(index),
        "continual.arrival": info["arrival"],
        "continual.data_hash": info["data_hash"],
        "continual.parent_round": info["parent"] or "",
        "continual.strategy": info["strategy"],
        "continual.git_commit": _git_commit(ws.root),
    }
    run_id = client.create_run(experiment_id, run_name=folder.key, tags=tags).info.run_id
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
        version = _register_model(client, ws, folder, model, run_id) if register else None
        if version:
            _refuse_if_raced(client, ws, model, version, params)
        client.log_batch(parent_id, metrics=scalars)
        for name in LINEAGE_PLOTS:
            client.log_artifact(parent_id, str(Path(tmp) / name), "plots")
        client.set_tag(run_id, ROUND_HASH_TAG, folder.round_hash)  # last: only a complete run counts as logged
    registered = f", model {model} v{version}" if version else ""
    print(f"tracking: round {folder.key} -> run {run_id}{registered}")
    return run_id


def _lineage_run(client: "MlflowClient", experiment_id: str, ws: Workspace, info: dict[str, Any]) -> str:
    from mlflow.entities import Param

    line = lineage(ws, info)
    query = f"tags.`{KIND_TAG}` = 'lineage' and tags.`{LINEAGE_TAG}` = '{line}'"
    found = client.search_runs([experiment_id], query, max_results=1)
    if found:
        if not found[0].data.params:  # created, then killed before its params were logged
            client.log_batch(found[0].info.run_id,
                             params=[Param(name, value) for name, value in _flatten(info["params"]).items()])
        return found[0].info.run_id
    tags = {KIND_TAG: "lineage", LINEAGE_TAG: line, "continual.strategy": info["strategy"],
            local_store.FOLDER_TAG: str(ws.home)}
    run_id = client.create_run(experiment_id, run_name=line.rsplit(":", 1)[0], tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(name, value) for name, value in _flatten(info["params"]).items()])
    client.set_terminated(run_id)  # rounds append to it later; it is never "running" in between
    return run_id


def _register_model(client: "MlflowClient", ws: Workspace, folder: RoundFolder, name: str, run_id: str) -> str:
    """Log the round's model folder as a pyfunc model (what `mlflow models serve` runs) and register it.

    A LoRA round's folder holds adapters: the version gets them merged into a plain classifier folder, so
    every server, the ONNX backends included, loads one model as it would any round's. Only then is torch
    imported: it alone costs the track stage about 0.9 GB of resident memory."""
    with tempfile.TemporaryDirectory(prefix="continual-merged-") as scratch:
        model_dir = folder.path / "model"
        if folder.info["params"]["model"].get("adapter", "none") != "none":
            from continual.rounds.export import merged_folder

            model_dir = merged_folder(model_dir, Path(scratch) / "model")
        logged = log_pooled_model(model_dir, registered_model_name=name)
    version = str(logged.registered_model_version)
    tags = {
        "round": str(folder.info["index"]),
        "round_key": folder.key,
        "arrival": folder.info["arrival"],
        "data_hash": folder.info["data_hash"],
        "run_id": run_id,
        "round_hash": folder.round_hash,
        WORKSPACE_TAG: ws.identity[:12],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def _refuse_if_raced(client: "MlflowClient", ws: Workspace, name: str, version: str, params: dict) -> None:
    """Two streams that registered their first versions under one name at the same moment both passed the check
    before it: the one whose version came second refuses its version (never gated, never served) and stops."""
    import mlflow

    try:
        refuse_if_owned_elsewhere(client, ws, name, params, mlflow.get_tracking_uri())
    except NameTaken as taken:
        client.set_model_version_tag(name, version, "promotion.reasons", f"refused: {taken}")
        client.set_model_version_tag(name, version, DECISION_TAG, "refused")
        raise


def log_pooled_model(model_dir: Path, registered_model_name: str | None = None):
    """Log a pooled classifier folder into the active run as MLflow's pyfunc flavour.

    The transformers flavour cannot express mean pooling (its pipeline reads the CLS pooler), so the folder
    travels as an artifact and ``service.pyfunc`` loads it; the ``service`` package travels as code, so the
    model loads wherever torch, transformers and mlflow are installed.
    """
    import mlflow

    import service
    from service.pyfunc import ARTIFACT, SIGNATURE

    code = Path(service.__file__).parent
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(code / "pyfunc_model.py"),  # models from code: nothing is pickled
        # A file URI, not a path: MLflow percent-decodes a plain path, and "a %25 b" would become "a % b".
        artifacts={ARTIFACT: Path(model_dir).resolve().as_uri()},
        code_paths=[str(code)],
        signature=SIGNATURE,
        pip_requirements=[f"{package}=={_release(package)}" for package in SERVED_PACKAGES],
        registered_model_name=registered_model_name,
    )


def _release(package: str) -> str:
    # Without a local build label (torch 2.x+cu128): the serving machine picks its own build.
    return metadata.version(package).split("+")[0]


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
    history = [metrics if k == folder.key else json.loads((ws.round_dir(k) / "metrics.json").read_text())
               for k in keys]
    plot_curves(history, out / "forgetting_curve.png")
    confusion = metrics["confusion"]
    plot_confusion(confusion["matrix"], confusion["labels"], f"confusion on {folder.key} (row: true, column: "
                   "predicted)", out / "confusion_matrix.png",
                   int((params.get("tracking") or {}).get("confusion_classes", CONFUSION_CLASSES)))

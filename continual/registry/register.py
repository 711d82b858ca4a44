"""A round's model as a version of the registered model: logged as a pyfunc model, tagged with what the server
shows of it, and refused when another stream owns the name (``continual.registry.model_name``).

``mlflow`` is imported inside functions: importing this module must stay cheap for ``continual --help``.
"""
from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from continual.registry.connect import Tracking
from continual.registry.model_name import NameTaken, refuse_if_owned_elsewhere
from continual.registry.round_folder import RoundFolder, find_round_run
from continual.registry.tags import (ARRIVAL_TAG, DATA_HASH_TAG, DECISION_TAG, REASONS_TAG, ROUND_KEY_TAG, ROUND_TAG,
                                     RUN_ID_TAG, VERSION_ROUND_HASH_TAG, WORKSPACE_TAG)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

# What the served model needs, pinned to what trained it; listed by hand because MLflow's inference of
# requirements imports every candidate package (torchvision included) and takes seconds.
SERVED_PACKAGES = ("mlflow", "transformers", "torch", "tokenizers", "safetensors", "pandas")


def claim_name(store: Tracking, name: str) -> None:
    """Raise NameTaken, before a round logs anything, when registered model ``name`` belongs to another stream."""
    import mlflow

    refuse_if_owned_elsewhere(store.client, store.ws, name, store.params, mlflow.get_tracking_uri())


def register_round(store: Tracking, folder: RoundFolder, name: str, run_id: str) -> str:
    """Log the round's model folder into the active run as a pyfunc model (what `mlflow models serve` runs),
    register it under ``name`` and tag the version; return its number.

    A LoRA round's folder holds adapters: the version gets them merged into a plain classifier folder, so
    every server, the ONNX backends included, loads one model as it would any round's. Only then is torch
    imported: it alone costs the track stage about 0.9 GB of resident memory."""
    client = store.client
    with tempfile.TemporaryDirectory(prefix="continual-merged-") as scratch:
        model_dir = folder.path / "model"
        if folder.info["params"]["model"].get("adapter", "none") != "none":
            from continual.rounds.export import merged_folder

            model_dir = merged_folder(model_dir, Path(scratch) / "model")
        logged = log_pooled_model(model_dir, registered_model_name=name)
    version = str(logged.registered_model_version)
    tags = {
        ROUND_TAG: str(folder.info["index"]),
        ROUND_KEY_TAG: folder.key,
        ARRIVAL_TAG: folder.info["arrival"],
        DATA_HASH_TAG: folder.info["data_hash"],
        RUN_ID_TAG: run_id,
        VERSION_ROUND_HASH_TAG: folder.round_hash,
        WORKSPACE_TAG: store.ws.identity[:12],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    _refuse_if_raced(store, name, version)
    return version


def _refuse_if_raced(store: Tracking, name: str, version: str) -> None:
    """Two streams that registered their first versions under one name at the same moment both passed the check
    before it: the one whose version came second refuses its version (never gated, never served) and stops."""
    try:
        claim_name(store, name)
    except NameTaken as taken:
        store.client.set_model_version_tag(name, version, REASONS_TAG, f"refused: {taken}")
        store.client.set_model_version_tag(name, version, DECISION_TAG, "refused")
        raise


def registered_version(store: Tracking, folder: RoundFolder, name: str) -> "ModelVersion":
    """The version of ``name`` registered for exactly this round folder's content (LookupError: none yet)."""
    run_id = find_round_run(store.client, store.experiment_id, store.ws, folder)
    versions = store.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'") if run_id else []
    if not versions:
        raise LookupError(f"round {folder.key} has no registered version of {name}: log it first (lineage.log_round)")
    return versions[0]


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

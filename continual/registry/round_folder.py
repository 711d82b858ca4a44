"""A finished round as its folder records it, and the MLflow run that was logged for exactly that content.

DVC run-cache rule: ``dvc repro`` may restore a round folder from its run cache without running the round
stage, so a round's run is identified by the folder's content, not by the act of training: its tag
``continual.round_hash`` is the sha256 of the folder's metrics.json bytes followed by its round.json bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continual.registry.tags import KIND_TAG, LINEAGE_TAG, ROUND_HASH_TAG
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient


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


def finished_rounds(ws: Workspace) -> list[str]:
    """The stream's round keys whose folder is complete; a round that has not run yet is left out."""
    return [key for key in ws.stream() if (ws.round_dir(key) / "metrics.json").exists()]


def lineage(ws: Workspace, info: dict[str, Any]) -> str:
    """``strategy:params-hash:workspace``: rounds trained alike in one workspace share a lineage run."""
    params_hash = hashlib.sha256(json.dumps(info["params"], sort_keys=True).encode()).hexdigest()
    return f"{info['strategy']}:{params_hash[:12]}:{ws.identity[:12]}"


def find_round_run(client: "MlflowClient", experiment_id: str, ws: Workspace, folder: RoundFolder) -> str | None:
    """The run logged for exactly this folder content in its lineage, if any."""
    query = (
        f"tags.`{KIND_TAG}` = 'round' and tags.`{LINEAGE_TAG}` = '{lineage(ws, folder.info)}'"
        f" and tags.`{ROUND_HASH_TAG}` = '{folder.round_hash}'"
    )
    runs = client.search_runs([experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None

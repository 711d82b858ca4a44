"""Training a round in a workspace so that a kill never costs the round again: the one entry point that
`continual round` (the dvc.yaml stage) and `continual compare` call.

DVC records a round only after `continual round` has exited, so a kill in between leaves a finished round
that DVC does not know, and the next `dvc repro` would delete it and train it again
(continual.workspace.finished_round). ``train_round`` clears the half-written folders of killed rounds, puts
such a finished round back instead of training it, and keeps what it trains for the next time. ``run_round``
alone does none of this: benchmarks call it where they time a bare round.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any

from continual.model.pretrained import base_model_path, check_max_length
from continual.progress import ticking
from continual.workspace.finished_round import keep_finished_round, restore_finished_round
from continual.workspace.layout import Workspace
from continual.workspace.repair import dead_round_temps


@dataclass(frozen=True)
class FinishedRound:
    key: str
    metrics: dict[str, Any] | None  # None only for a restored round kept without its metrics file
    restored: bool  # put back as a `continual round` finished it, not trained again


def check_model_params(params: dict) -> None:
    """What the encoder cannot do, refused before a round trains (a later round's model is loaded, not built)."""
    check_max_length(base_model_path(params["model"]["base"]), params["model"]["max_length"])


def train_round(ws: Workspace, key: str, params: dict) -> FinishedRound:
    """Write rounds/KEY (and its metrics file) for the registered arrival ``key``: restored when a round
    finished with exactly these inputs was never recorded by DVC, else trained by ``run_round``."""
    ws.registered(key)  # a key of stream.yaml, never a path such as ../x
    for folder in dead_round_temps(ws):  # half written by a round that was killed
        shutil.rmtree(folder, ignore_errors=True)
    inputs = ws.round_inputs(key, params)
    if restore_finished_round(ws, key, inputs):
        metrics_file = ws.round_metrics_file(key)
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        return FinishedRound(key, metrics, restored=True)
    check_model_params(params)
    with ticking(f"round {key}: loading torch, transformers and avalanche"):  # ~10 s on 2 busy cores
        from continual.rounds.round import run_round  # torch and avalanche: only when a round trains

    metrics = run_round(ws, key, params)
    keep_finished_round(ws, key, inputs)
    return FinishedRound(key, metrics, restored=False)

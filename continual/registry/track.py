"""The track stage: log every finished round that has no MLflow run yet, then gate the newest round.

The stage holds the registry lock throughout and connects to the store once, when it first needs to.

The gate (``promotion`` in params.yaml) runs on the stream's newest round that has finished (an arrival
ingested during `dvc repro` has none yet), once per round version: an older round never displaces a newer
champion, and a move made by hand (``continual.registry.champion``) is not undone by the next ``dvc repro``.
A DVC experiment never moves the alias: under ``dvc exp run`` the round is logged and gated, but the version
is tagged ``promotion.skipped``. Such a version is gated later only once the workspace's params.yaml,
dvc.lock and stream.yaml are committed as they are (the experiment applied on the branch).
"""
from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Any

from continual.registry.champion import (current_champion, history, move, other_workspace, record_interrupted_move,
                                         same)
from continual.registry.connect import Tracking
from continual.registry.gate import Decision, Gate, decide, int8_check
from continual.registry.lineage import reconcile
from continual.registry.lock import registry_lock
from continual.registry.model_name import default_name, registered_model
from continual.registry.register import registered_version
from continual.registry.round_folder import RoundFolder, finished_rounds
from continual.registry.tags import DECISION_TAG, INT8_GATE_TAG, REASONS_TAG, SKIPPED_TAG, VERSION_ROUND_HASH_TAG
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def track(ws: Workspace, params: dict[str, Any]) -> Decision | None:
    """The track stage: log every finished round that has no MLflow run yet, then gate the newest round."""
    with registry_lock(ws):
        store = Tracking(ws, params)
        reconcile(store)
        return gate_newest(store)


def gate_newest(store: Tracking) -> Decision | None:
    """Gate the stream's newest finished round, once: a version that carries a decision is left alone, so a
    champion chosen by hand since is not undone. Older rounds are never gated: they must not displace a newer one.
    Call it holding the registry lock."""
    ws, params = store.ws, store.params
    keys = ws.stream()
    if not keys or not params["tracking"].get("register_models", True):
        return None
    finished = finished_rounds(ws)
    if not finished:
        print(f"promotion: round {keys[-1]} has not run yet: nothing to gate")
        return None
    # The newest finished round: an arrival ingested while `dvc repro` ran (its round not trained yet) must
    # not leave the round this repro trained ungated. Nothing later has a model, so nothing newer is displaced.
    key = finished[-1]
    if key != keys[-1]:
        print(f"promotion: round {keys[-1]} has not run yet; gating the newest round that has, {key}")
    name = registered_model(ws, params)
    folder = RoundFolder.read(ws, key)
    version = registered_version(store, folder, name)
    if DECISION_TAG in version.tags:
        print(f"promotion: round {key} ({name} v{version.version}) was gated before: "
              f"{version.tags[DECISION_TAG]}; move the champion by hand with continual promote/rollback")
        return None
    if SKIPPED_TAG in version.tags and not dvc_experiment() and not _committed(ws):
        print(f"promotion: round {key} ({name} v{version.version}) was trained in a DVC experiment; "
              f"it is gated once params.yaml, dvc.lock and stream.yaml are committed as they are "
              f"(dvc exp apply, git commit, dvc repro), or made champion by hand: continual promote {key}")
        return None
    return _gate(store, folder, version)


def promote_if_better(ws: Workspace, key: str, params: dict[str, Any]) -> Decision:
    """Gate round ``key``'s model version (logged by ``lineage.log_round``); accepted -> it becomes champion,
    unless this is a DVC experiment (then the verdict is recorded as skipped and the alias stays)."""
    with registry_lock(ws):
        store, folder = Tracking(ws, params), RoundFolder.read(ws, key)
        return _gate(store, folder, registered_version(store, folder, registered_model(ws, params)))


def dvc_experiment() -> str | None:
    """The DVC experiment this process runs in, or None under a plain ``dvc repro`` or by hand.

    ``dvc exp run`` (every queue, the workspace one included) puts ``DVC_EXP_BASELINE_REV`` and
    ``DVC_EXP_NAME`` into each stage command's environment: dvc 3.67, dvc/repo/experiments/queue/base.py
    (``BaseStashQueue._stash_exp`` builds ``run_env``) and dvc/stage/run.py (``prepare_kwargs`` adds it);
    a plain ``dvc repro`` sets neither."""
    name, baseline = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_EXP_BASELINE_REV")
    if name or baseline:
        return f"{name or 'unnamed'} (baseline {baseline[:7]})" if baseline else name
    return None


def _gate(store: Tracking, folder: RoundFolder, candidate: "ModelVersion") -> Decision:
    """``promote_if_better`` on a store, a round folder and its version the caller holds, under the registry
    lock the caller holds."""
    client, ws, params, key = store.client, store.ws, store.params, folder.key
    name = registered_model(ws, params)
    champion = current_champion(client, name)
    decision = decide(folder.metrics, _champion_acc(client, ws, folder, champion), Gate.from_params(params))
    other = other_workspace(client, ws, champion)
    if other:
        decision = Decision(False, decision.reasons + [
            f"refused: the champion v{champion.version} was trained in another workspace ({other}); the gate "
            f"never takes the alias from it: give this workspace its own tracking.registered_model (empty: "
            f"{default_name(ws)}), or move the alias by hand with continual promote"])
    experiment = dvc_experiment()
    if experiment:
        decision = Decision(decision.accepted, decision.reasons,
                            f"DVC experiment {experiment}: the champion moves only in the workspace's own "
                            f"`dvc repro` or by hand (continual promote)")

    verdict, reasons = ("accepted" if decision.accepted else "refused"), "; ".join(decision.reasons)
    against = f"champion v{champion.version}" if champion else "no champion yet"
    print(f"promotion: round {key} ({name} v{candidate.version}) {verdict} against {against}")
    for reason in decision.reasons:
        print(f"  {reason}")
    # Before any alias move: a server polling the alias must find the verdict on the version it loads.
    int8 = int8_check(ws, key, params)
    client.set_model_version_tag(name, candidate.version, INT8_GATE_TAG, int8)
    client.set_tag(candidate.run_id, INT8_GATE_TAG, int8)
    print(f"  int8 (what `continual serve` serves by default, if passed): {int8}")
    if decision.skipped:
        note = f"{verdict}, not applied: {decision.skipped}"
        client.set_tag(candidate.run_id, SKIPPED_TAG, note)
        client.set_model_version_tag(name, candidate.version, SKIPPED_TAG, note)
        print(f"promotion: skipped, the alias stays where it is ({decision.skipped})")
        return decision
    if decision.accepted and not same(champion, candidate):
        move(client, ws, name, str(candidate.version), champion, f"gate, round {key}", "gate")
    elif decision.accepted and history(client, name)[-1:] != [str(candidate.version)]:
        record_interrupted_move(client, ws, name, str(candidate.version), f"gate, round {key}")
    # Last: a gate that failed half way (an outage, a concurrent move) is gated again by the next track.
    client.set_tag(candidate.run_id, REASONS_TAG, reasons)
    client.set_model_version_tag(name, candidate.version, REASONS_TAG, reasons)
    client.set_tag(candidate.run_id, DECISION_TAG, verdict)
    client.set_model_version_tag(name, candidate.version, DECISION_TAG, verdict)
    return decision


def _champion_acc(client: "MlflowClient", ws: Workspace, folder: RoundFolder,
                  champion: "ModelVersion | None") -> dict[str, float] | None:
    """The champion's accuracy per arrival: its round run's ``acc.*``, plus the new arrival if it is the parent."""
    if champion is None:
        return None
    metrics = client.get_run(champion.run_id).data.metrics
    acc = {name[len("acc."):]: value for name, value in metrics.items() if name.startswith("acc.")}
    parent, before_update = folder.info["parent"], folder.metrics.get("acc_before_update")
    if parent and before_update is not None:
        if champion.tags.get(VERSION_ROUND_HASH_TAG) == RoundFolder.read(ws, parent).round_hash:
            acc.setdefault(folder.key, before_update)  # the parent model, measured on the new arrival
    return acc


def _committed(ws: Workspace) -> bool:
    """True when params.yaml, dvc.lock and stream.yaml are as the checked-out commit has them."""
    try:
        done = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml", "dvc.lock", "stream.yaml"],
                              cwd=ws.root, capture_output=True)
    except OSError:
        return False
    return done.returncode == 0

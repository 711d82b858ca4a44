"""The champion: the registered model version under the alias ``champion``, which the server loads.

A round's version takes the alias only through the gate (``promotion`` in params.yaml), or by hand
(``promote``, ``rollback``). Every move is recorded: the registered model's tags ``champion.history``
(the versions that held the alias, oldest first) and ``champion.last_move``, the new champion version's
tags ``champion.since``/``champion.how``, and one printed line.

The gate compares like with like: the average accuracy is taken over the arrivals that both the
candidate and the champion were measured on. The champion's measurements are the ``acc.<arrival>``
metrics of its round run, plus, when the champion is the candidate's parent round, its accuracy on the
new arrival (the candidate's ``acc_before_update`` is exactly that).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

from continual import tracking
from continual.params import load_params
from continual.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

ALIAS = "champion"
HISTORY_TAG = "champion.history"
HISTORY_KEPT = 200  # model tag values are capped (5,000 characters); the oldest moves fall off
TOLERANCE = 1e-9  # 0.81 - 0.71 is 0.10000000000000009: a forgetting of exactly the bound must pass


@dataclass(frozen=True)
class Gate:
    max_avg_acc_drop: float
    max_forgetting: float
    min_new_acc: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Gate":
        return cls(**params["promotion"])


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reasons: list[str]  # one per check, each starting with 'ok: ' or 'refused: '


def decide(candidate: dict[str, Any], champion_acc: dict[str, float] | None, gate: Gate) -> Decision:
    """The gate, pure: ``candidate`` is a round's metrics.json, ``champion_acc`` the champion's accuracy
    per arrival (None: no champion yet, so only the forgetting bound and the new-arrival floor apply)."""
    checks: list[tuple[bool, str]] = []
    new_key = candidate["key"]
    new_acc = candidate["acc"][new_key]
    checks.append((new_acc >= gate.min_new_acc - TOLERANCE,
                   f"accuracy on the new arrival {new_key} {new_acc:.3f}, floor {gate.min_new_acc:.3f}"))
    forgetting = candidate.get("forgetting") or {}
    if forgetting:
        worst = max(forgetting, key=forgetting.get)
        checks.append((forgetting[worst] <= gate.max_forgetting + TOLERANCE,
                       f"largest forgetting {forgetting[worst]:.3f} (on {worst}), bound {gate.max_forgetting:.3f}"))
    if champion_acc:
        common = [k for k in champion_acc if k in candidate["acc"]]
        # No arrival in common (a champion from another stream): fall back to the overall averages.
        ours = fmean([candidate["acc"][k] for k in common]) if common else candidate["avg_acc"]
        theirs = fmean([champion_acc[k] for k in common]) if common else fmean(list(champion_acc.values()))
        checks.append((theirs - ours <= gate.max_avg_acc_drop + TOLERANCE,
                       f"avg accuracy {ours:.3f} against the champion's {theirs:.3f} on {len(common)} common"
                       f" arrivals, allowed drop {gate.max_avg_acc_drop:.3f}"))
    return Decision(all(ok for ok, _ in checks), [("ok: " if ok else "refused: ") + text for ok, text in checks])


# -- with MLflow ------------------------------------------------------------------------------------------
def promote_if_better(ws: Workspace, key: str, params: dict[str, Any]) -> Decision:
    """Gate round ``key``'s model version (logged by ``tracking.log_round``); accepted -> it becomes champion."""
    client, experiment_id = tracking.connect(ws, params)
    name = params["tracking"]["registered_model"]
    folder = tracking.RoundFolder.read(ws, key)
    candidate = _version_of(client, experiment_id, ws, folder, name)
    champion = _champion(client, name)
    decision = decide(folder.metrics, _champion_acc(client, ws, folder, champion), Gate.from_params(params))

    verdict, reasons = ("accepted" if decision.accepted else "refused"), "; ".join(decision.reasons)
    client.set_tag(candidate.run_id, "promotion.decision", verdict)
    client.set_tag(candidate.run_id, "promotion.reasons", reasons)
    client.set_model_version_tag(name, candidate.version, "promotion.decision", verdict)
    client.set_model_version_tag(name, candidate.version, "promotion.reasons", reasons)
    against = f"champion v{champion.version}" if champion else "no champion yet"
    print(f"promotion: round {key} ({name} v{candidate.version}) {verdict} against {against}")
    for reason in decision.reasons:
        print(f"  {reason}")
    if decision.accepted and not _same(champion, candidate):
        _move(client, name, str(candidate.version), _history(client, name) + [str(candidate.version)],
              f"gate, round {key}")
    return decision


def gate_restored_head(ws: Workspace, params: dict[str, Any], reconciled: dict[str, str]) -> Decision | None:
    """Gate the stream's last round if ``tracking.reconcile`` just logged it: DVC restored it from its run
    cache, so its own stage (which gates) never ran. Earlier restored rounds are not gated: an older round
    must not displace a newer champion."""
    keys = ws.stream()
    if not keys or keys[-1] not in reconciled or not params["tracking"].get("register_models", True):
        return None
    return promote_if_better(ws, keys[-1], params)


def promote(ws: Workspace, round_key: str) -> str:
    """Make the version logged for the workspace's round folder ``round_key`` champion, gate or not."""
    params = load_params(ws.params_file)
    client, experiment_id = tracking.connect(ws, params)
    name = params["tracking"]["registered_model"]
    version = _version_of(client, experiment_id, ws, tracking.RoundFolder.read(ws, round_key), name)
    number = str(version.version)
    if _same(_champion(client, name), version):
        print(f"champion: {name} v{number} (round {round_key}) already is the champion")
        return number
    _move(client, name, number, _history(client, name) + [number], f"by hand, round {round_key}")
    return number


def rollback(ws: Workspace) -> str:
    """Give the alias back to the version that held it before the current champion."""
    params = load_params(ws.params_file)
    client, _ = tracking.connect(ws, params)
    name = params["tracking"]["registered_model"]
    champion = _champion(client, name)
    history = _history(client, name)
    # Drop the current champion from the end (if the alias was moved outside this module, it is not there).
    while history and champion is not None and history[-1] == str(champion.version):
        history.pop()
    if not history:
        raise RuntimeError(f"{name}: no earlier champion to roll back to")
    _move(client, name, history[-1], history, "rollback")
    return history[-1]


def _champion_acc(client: "MlflowClient", ws: Workspace, folder: tracking.RoundFolder,
                  champion: "ModelVersion | None") -> dict[str, float] | None:
    """The champion's accuracy per arrival: its round run's ``acc.*``, plus the new arrival if it is the parent."""
    if champion is None:
        return None
    metrics = client.get_run(champion.run_id).data.metrics
    acc = {name[len("acc."):]: value for name, value in metrics.items() if name.startswith("acc.")}
    parent, before_update = folder.info["parent"], folder.metrics.get("acc_before_update")
    if parent and before_update is not None:
        if champion.tags.get("round_hash") == tracking.RoundFolder.read(ws, parent).round_hash:
            acc.setdefault(folder.key, before_update)  # the parent model, measured on the new arrival
    return acc


def _version_of(client: "MlflowClient", experiment_id: str, ws: Workspace, folder: tracking.RoundFolder,
                name: str) -> "ModelVersion":
    run_id = tracking.find_round_run(client, experiment_id, ws, folder)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'") if run_id else []
    if not versions:
        raise LookupError(f"round {folder.key} has no registered version of {name}: log it first (tracking.log_round)")
    return versions[0]


def _champion(client: "MlflowClient", name: str) -> "ModelVersion | None":
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:  # no registered model yet, or no version holds the alias
        return None


def _same(a: "ModelVersion | None", b: "ModelVersion") -> bool:
    # The SQL store answers versions as int, tags and aliases hold strings: compare as strings.
    return a is not None and str(a.version) == str(b.version)


def _history(client: "MlflowClient", name: str) -> list[str]:
    value = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in value.split(",") if v]


def _move(client: "MlflowClient", name: str, version: str, history: list[str], how: str) -> None:
    before = _champion(client, name)
    client.set_registered_model_alias(name, ALIAS, version)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    line = f"champion: {name} v{before.version if before else '-'} -> v{version} ({how})"
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_KEPT:]))
    client.set_registered_model_tag(name, "champion.last_move", f"{now} {line}")
    client.set_model_version_tag(name, version, "champion.since", now)
    client.set_model_version_tag(name, version, "champion.how", how)
    print(line)

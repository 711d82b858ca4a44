"""The champion: the registered model version under the alias ``champion``, which the server loads.

Who moves the alias:

- the gate (``promotion`` in params.yaml), run by the track stage (``track``) on the stream's newest round
  that has finished (an arrival ingested during `dvc repro` has none yet),
  once per round version: an older round never displaces a newer champion, and a move made by hand is not
  undone by the next ``dvc repro``;
- never a DVC experiment: under ``dvc exp run`` the round is logged and gated, but the alias is not moved
  (the version is tagged ``promotion.skipped``). Such a version is gated later only once the workspace's
  params.yaml, dvc.lock and stream.yaml are committed as they are (the experiment applied on the branch);
- by hand: ``promote`` (any round, gate or not) and ``rollback``.

Registry safety:

- An error reading the registry is an error. Only "no such registered model" (RESOURCE_DOES_NOT_EXIST)
  or "alias not found" means "no champion yet".
- Every move is a compare-and-set: the alias is re-read right before it is written, and the move is
  refused (``ChampionMoved``, nothing changed) if it no longer points where the decision saw it.
- In one workspace, registry decisions run one at a time (a file lock, ``.continual/registry.lock``).
- The history is one registered-model tag per move (``champion.move.<ns time>-<random>``, a JSON value):
  concurrent writers, even on other machines, never overwrite each other's record. ``champion.history``
  (the versions that held the alias, oldest first) is a summary derived from those tags, and
  ``champion.last_move``, the new version's ``champion.since``/``champion.how`` and one printed line
  describe the latest move.
- Each workspace registers into a name of its own by default, and the track stage refuses to register into
  a name another workspace owns (``continual.registry.model_name``). Should a champion from another workspace hold
  the alias anyway (a registry from before that check, or a version moved by hand), the gate never takes
  the alias from it: two workspaces would otherwise fight over one alias. ``promote`` may, and says so.

The gate compares like with like: the average accuracy is taken over the arrivals that both the
candidate and the champion were measured on. The champion's measurements are the ``acc.<arrival>``
metrics of its round run, plus, when the champion is the candidate's parent round, its accuracy on the
new arrival (the candidate's ``acc_before_update`` is exactly that).
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any, Iterator

from continual.registry import tracking
from continual.registry.model_name import default_name, registered_model, version_workspace
from continual.params import load_params
from continual.workspace.layout import Workspace
from service.backends import int8_verdict, read_quantization_report
from service.model_source import INT8_GATE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

ALIAS = "champion"
HISTORY_TAG = "champion.history"  # summary: the versions that held the alias, oldest first
MOVE_TAG = "champion.move."  # one registered-model tag per move; the key sorts by time
DECISION_TAG = "promotion.decision"  # on the round's run and model version: the gate ran to its end
SKIPPED_TAG = "promotion.skipped"  # on the round's run and model version: gated in a DVC experiment
LOCK_FILE = ".continual/registry.lock"
HISTORY_KEPT = 200  # versions kept in the summary tag
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
    skipped: str = ""  # why the alias was not moved whatever the verdict (a DVC experiment), else ""


class ChampionMoved(ValueError):
    """The alias no longer points where the decision saw it: nothing was changed."""


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


_held = threading.local()


@contextmanager
def registry_lock(ws: Workspace) -> Iterator[None]:
    """Registry decisions in this workspace, one at a time (re-entrant within a thread). Across machines or
    clones sharing one server, the compare-and-set in ``_move`` and the per-move history tags take over."""
    path = ws.home / LOCK_FILE  # a DVC experiment's temporary copy shares its workspace's (Workspace.home)
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"promotion: waiting for another registry change in this workspace ({LOCK_FILE})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)  # closing the file releases the lock


def track(ws: Workspace, params: dict[str, Any]) -> Decision | None:
    """The track stage: log every finished round that has no MLflow run yet, then gate the newest round."""
    with registry_lock(ws):
        tracking.reconcile(ws, params)
        return gate_newest(ws, params)


def gate_newest(ws: Workspace, params: dict[str, Any]) -> Decision | None:
    """Gate the stream's newest finished round, once: a version that carries a decision is left alone, so a
    champion chosen by hand since is not undone. Older rounds are never gated: they must not displace a newer one."""
    keys = ws.stream()
    if not keys or not params["tracking"].get("register_models", True):
        return None
    finished = [k for k in keys if (ws.round_dir(k) / "metrics.json").exists()]
    if not finished:
        print(f"promotion: round {keys[-1]} has not run yet: nothing to gate")
        return None
    # The newest finished round: an arrival ingested while `dvc repro` ran (its round not trained yet) must
    # not leave the round this repro trained ungated. Nothing later has a model, so nothing newer is displaced.
    key = finished[-1]
    if key != keys[-1]:
        print(f"promotion: round {keys[-1]} has not run yet; gating the newest round that has, {key}")
    with registry_lock(ws):
        client, experiment_id = tracking.connect(ws, params)
        name = registered_model(ws, params)
        version = _version_of(client, experiment_id, ws, tracking.RoundFolder.read(ws, key), name)
        if DECISION_TAG in version.tags:
            print(f"promotion: round {key} ({name} v{version.version}) was gated before: "
                  f"{version.tags[DECISION_TAG]}; move the champion by hand with continual promote/rollback")
            return None
        if SKIPPED_TAG in version.tags and not dvc_experiment() and not _committed(ws):
            print(f"promotion: round {key} ({name} v{version.version}) was trained in a DVC experiment; "
                  f"it is gated once params.yaml, dvc.lock and stream.yaml are committed as they are "
                  f"(dvc exp apply, git commit, dvc repro), or made champion by hand: continual promote {key}")
            return None
        return promote_if_better(ws, key, params)


def promote_if_better(ws: Workspace, key: str, params: dict[str, Any]) -> Decision:
    """Gate round ``key``'s model version (logged by ``tracking.log_round``); accepted -> it becomes champion,
    unless this is a DVC experiment (then the verdict is recorded as skipped and the alias stays)."""
    with registry_lock(ws):
        client, experiment_id = tracking.connect(ws, params)
        name = registered_model(ws, params)
        folder = tracking.RoundFolder.read(ws, key)
        candidate = _version_of(client, experiment_id, ws, folder, name)
        champion = _champion(client, name)
        decision = decide(folder.metrics, _champion_acc(client, ws, folder, champion), Gate.from_params(params))
        other = _other_workspace(client, ws, champion)
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
        if decision.accepted and not _same(champion, candidate):
            _move(client, ws, name, str(candidate.version), champion, f"gate, round {key}", "gate")
        elif decision.accepted and _history(client, name)[-1:] != [str(candidate.version)]:
            _record_interrupted_move(client, ws, name, str(candidate.version), f"gate, round {key}")
        # Last: a gate that failed half way (an outage, a concurrent move) is gated again by the next track.
        client.set_tag(candidate.run_id, "promotion.reasons", reasons)
        client.set_model_version_tag(name, candidate.version, "promotion.reasons", reasons)
        client.set_tag(candidate.run_id, DECISION_TAG, verdict)
        client.set_model_version_tag(name, candidate.version, DECISION_TAG, verdict)
        return decision


def int8_check(ws: Workspace, key: str, params: dict[str, Any]) -> str:
    """The int8 graph against fp32 on every arrival's test split: "passed: ...", "failed: ..." or "missing: ..."."""
    report = read_quantization_report(ws.round_dir(key) / "model")
    return int8_verdict(report, float(params["serving"]["max_quantized_drop"]))[1]


def promote(ws: Workspace, round_key: str) -> str:
    """Make the version logged for the workspace's round folder ``round_key`` champion, gate or not."""
    params = load_params(ws.params_file)
    with registry_lock(ws):
        client, experiment_id = tracking.connect(ws, params)
        name = registered_model(ws, params)
        version = _version_of(client, experiment_id, ws, tracking.RoundFolder.read(ws, round_key), name)
        number = str(version.version)
        champion = _champion(client, name)
        if _same(champion, version):
            print(f"champion: {name} v{number} (round {round_key}) already is the champion")
            return number
        other = _other_workspace(client, ws, champion)
        if other:
            print(f"champion: taking the alias from v{champion.version}, trained in another workspace ({other})")
        if INT8_GATE_TAG not in (version.tags or {}):  # never gated (a DVC experiment's round): judge int8 now
            client.set_model_version_tag(name, number, INT8_GATE_TAG, int8_check(ws, round_key, params))
        _move(client, ws, name, number, champion, f"by hand, round {round_key}", "promote")
        return number


def rollback(ws: Workspace) -> str:
    """Give the alias back to the version that held it before the current champion."""
    params = load_params(ws.params_file)
    with registry_lock(ws):
        client, _ = tracking.connect(ws, params)
        name = registered_model(ws, params)
        champion = _champion(client, name)
        history = _history(client, name)
        # Drop the current champion from the end (if the alias was moved outside this module, it is not there).
        while history and champion is not None and history[-1] == str(champion.version):
            history.pop()
        if not history:
            raise RuntimeError(f"{name}: no earlier champion to roll back to")
        _move(client, ws, name, history[-1], champion, "rollback", "rollback")
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


def _other_workspace(client: "MlflowClient", ws: Workspace, champion: "ModelVersion | None") -> str | None:
    """The workspace id (12 characters) the champion was trained in, if it is not this one."""
    owner = version_workspace(client, champion) if champion is not None else ""
    return owner if owner and owner != ws.identity[:12] else None


def _version_of(client: "MlflowClient", experiment_id: str, ws: Workspace, folder: tracking.RoundFolder,
                name: str) -> "ModelVersion":
    run_id = tracking.find_round_run(client, experiment_id, ws, folder)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'") if run_id else []
    if not versions:
        raise LookupError(f"round {folder.key} has no registered version of {name}: log it first (tracking.log_round)")
    return versions[0]


def _not_found(error: Exception) -> bool:
    """True only for "no such registered model" or "no such alias": what "no champion yet" means."""
    code = getattr(error, "error_code", "")
    text = str(error).lower()
    # The SQL store answers a missing alias with INVALID_PARAMETER_VALUE "Registered model alias ... not found."
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                  and "not found" in text)


def _champion(client: "MlflowClient", name: str) -> "ModelVersion | None":
    """The version holding the alias; None when there is none. Any other registry error is raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise


def _same(a: "ModelVersion | None", b: "ModelVersion") -> bool:
    # The SQL store answers versions as int, tags and aliases hold strings: compare as strings.
    return a is not None and str(a.version) == str(b.version)


def _number(version: "ModelVersion | None") -> str:
    return "" if version is None else str(version.version)


def _model_tags(client: "MlflowClient", name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException as error:
        if _not_found(error):
            return {}
        raise


def _history(client: "MlflowClient", name: str) -> list[str]:
    return _replay(_model_tags(client, name))


def _replay(tags: dict[str, str]) -> list[str]:
    """The versions that held the alias, oldest first, replayed from the per-move tags.

    A gate or promote pushes its version; a rollback pops the version it replaced and lands on its target.
    Before the first per-move tag, the history is the summary tag a former release wrote."""
    moves = [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(MOVE_TAG))]
    if not moves:
        return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]
    stack = list(moves[0].get("base", []))
    for move in moves:
        if move["kind"] == "rollback":
            while stack and stack[-1] == move["from"]:
                stack.pop()
            if stack and stack[-1] == move["to"]:
                continue
        stack.append(move["to"])
    return stack


def _committed(ws: Workspace) -> bool:
    """True when params.yaml, dvc.lock and stream.yaml are as the checked-out commit has them."""
    try:
        done = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml", "dvc.lock", "stream.yaml"],
                              cwd=ws.root, capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def _record_interrupted_move(client: "MlflowClient", ws: Workspace, name: str, version: str, how: str) -> None:
    """The alias already points at ``version`` but no move says so: a gate killed between moving the alias and
    writing its record (``_move``). Write the record now, so history and rollback know the move."""
    history = _history(client, name)
    entry = {"kind": "gate", "from": history[-1] if history else "", "to": version,
             "how": f"{how} (recorded after an interrupted move)", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "workspace": ws.identity[:12]}
    if not any(key.startswith(MOVE_TAG) for key in _model_tags(client, name)):
        entry["base"] = history[-HISTORY_KEPT:]
    client.set_registered_model_tag(name, f"{MOVE_TAG}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", json.dumps(entry))
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(_history(client, name)[-HISTORY_KEPT:]))
    client.set_model_version_tag(name, version, "champion.how", entry["how"])
    print(f"champion: {name} v{version} holds the alias, but its move was not recorded (interrupted): recorded now")


def _set_alias(client: "MlflowClient", name: str, version: str, expected: "ModelVersion | None") -> None:
    """Write the alias; a writer that lost the race to create it is refused like any other moved champion.

    MLflow's SQL store writes an alias with ``session.merge`` (a SELECT, then an INSERT when no row is
    there), so two processes creating the first champion at once both INSERT and one of them fails on the
    table's primary key. That loser saw "no champion" and is now wrong about it: it is a ChampionMoved."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, ALIAS, version)
    except MlflowException as failed:
        now = _number(_champion(client, name))
        if now == _number(expected):
            raise
        raise ChampionMoved(f"{name}: another process set the champion to v{now} while this move to v{version} "
                            f"was writing it; nothing changed. Run it again to decide against v{now}") from failed


def _move(client: "MlflowClient", ws: Workspace, name: str, version: str, expected: "ModelVersion | None",
          how: str, kind: str) -> None:
    """Point the alias at ``version`` if it still points at ``expected`` (compare-and-set), and record it."""
    current = _champion(client, name)  # re-read right before the write
    if _number(current) != _number(expected):
        raise ChampionMoved(
            f"{name}: the champion is v{_number(current) or '-'} now, not v{_number(expected) or '-'} as when this "
            f"move to v{version} was decided; nothing changed. Run it again to decide against the new champion")
    tags = _model_tags(client, name)
    _set_alias(client, name, version, expected)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    entry = {"kind": kind, "from": _number(expected), "to": version, "how": how, "at": now,
             "workspace": ws.identity[:12]}
    if not any(key.startswith(MOVE_TAG) for key in tags):  # the first per-move tag keeps the summary before it
        entry["base"] = _replay(tags)[-HISTORY_KEPT:]
    client.set_registered_model_tag(name, f"{MOVE_TAG}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}",
                                    json.dumps(entry))
    line = f"champion: {name} v{_number(expected) or '-'} -> v{version} ({how})"
    history = _history(client, name)  # re-read: every writer's moves, this one included
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_KEPT:]))
    client.set_registered_model_tag(name, "champion.last_move", f"{now} {line}")
    client.set_model_version_tag(name, version, "champion.since", now)
    client.set_model_version_tag(name, version, "champion.how", how)
    print(line)
    after = _number(_champion(client, name))
    if after != version:
        print(f"champion: another process moved {name}'s alias to v{after} at the same moment; "
              f"both moves are in the {MOVE_TAG}* tags")

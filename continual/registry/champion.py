"""The champion: the registered model version under the alias ``champion``, which the server loads.

Who moves the alias: the gate, run by the track stage (``continual.registry.track``), and, by hand,
``promote`` (any round, gate or not) and ``rollback``.

Registry safety:

- An error reading the registry is an error. Only "no such registered model" (RESOURCE_DOES_NOT_EXIST)
  or "alias not found" means "no champion yet".
- Every move is a compare-and-set: the alias is re-read right before it is written, and the move is
  refused (``ChampionMoved``, nothing changed) if it no longer points where the decision saw it.
- In one workspace, registry decisions run one at a time (``continual.registry.lock``).
- The history is one registered-model tag per move (``champion.move.<ns time>-<random>``, a JSON value):
  concurrent writers, even on other machines, never overwrite each other's record. ``champion.history``
  (the versions that held the alias, oldest first) is a summary derived from those tags, and
  ``champion.last_move``, the new version's ``champion.since``/``champion.how`` and one printed line
  describe the latest move.
- Each workspace registers into a name of its own by default, and the track stage refuses to register into
  a name another workspace owns (``continual.registry.model_name``). Should a champion from another workspace hold
  the alias anyway (a registry from before that check, or a version moved by hand), the gate never takes
  the alias from it: two workspaces would otherwise fight over one alias. ``promote`` may, and says so.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

from continual.params import load_params
from continual.registry.connect import Tracking
from continual.registry.gate import int8_check
from continual.registry.lock import registry_lock
from continual.registry.model_name import registered_model, version_workspace
from continual.registry.register import registered_version
from continual.registry.round_folder import RoundFolder
from continual.registry.tags import (CHAMPION_ALIAS, HISTORY_TAG, HOW_TAG, INT8_GATE_TAG, LAST_MOVE_TAG, MOVE_TAG,
                                     SINCE_TAG)
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

HISTORY_KEPT = 200  # versions kept in the summary tag


class ChampionMoved(ValueError):
    """The alias no longer points where the decision saw it: nothing was changed."""


def promote(ws: Workspace, round_key: str) -> str:
    """Make the version logged for the workspace's round folder ``round_key`` champion, gate or not."""
    params = load_params(ws.params_file)
    with registry_lock(ws):
        store = Tracking(ws, params)
        client, name = store.client, registered_model(ws, params)
        version = registered_version(store, RoundFolder.read(ws, round_key), name)
        number = str(version.version)
        champion = current_champion(client, name)
        if same(champion, version):
            print(f"champion: {name} v{number} (round {round_key}) already is the champion")
            return number
        other = other_workspace(client, ws, champion)
        if other:
            print(f"champion: taking the alias from v{champion.version}, trained in another workspace ({other})")
        if INT8_GATE_TAG not in (version.tags or {}):  # never gated (a DVC experiment's round): judge int8 now
            client.set_model_version_tag(name, number, INT8_GATE_TAG, int8_check(ws, round_key, params))
        move(client, ws, name, number, champion, f"by hand, round {round_key}", "promote")
        return number


def rollback(ws: Workspace) -> str:
    """Give the alias back to the version that held it before the current champion."""
    params = load_params(ws.params_file)
    with registry_lock(ws):
        client, name = Tracking(ws, params).client, registered_model(ws, params)
        champion = current_champion(client, name)
        versions = history(client, name)
        # Drop the current champion from the end (if the alias was moved outside this module, it is not there).
        while versions and champion is not None and versions[-1] == str(champion.version):
            versions.pop()
        if not versions:
            raise RuntimeError(f"{name}: no earlier champion to roll back to")
        move(client, ws, name, versions[-1], champion, "rollback", "rollback")
        return versions[-1]


def current_champion(client: "MlflowClient", name: str) -> "ModelVersion | None":
    """The version holding the alias; None when there is none. Any other registry error is raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise


def other_workspace(client: "MlflowClient", ws: Workspace, champion: "ModelVersion | None") -> str | None:
    """The workspace id (12 characters) the champion was trained in, if it is not this one."""
    owner = version_workspace(client, champion) if champion is not None else ""
    return owner if owner and owner != ws.identity[:12] else None


def same(a: "ModelVersion | None", b: "ModelVersion") -> bool:
    # The SQL store answers versions as int, tags and aliases hold strings: compare as strings.
    return a is not None and str(a.version) == str(b.version)


def history(client: "MlflowClient", name: str) -> list[str]:
    """The versions that held the alias, oldest first."""
    return replay(_model_tags(client, name))


def replay(tags: dict[str, str]) -> list[str]:
    """The versions that held the alias, oldest first, replayed from the per-move tags.

    A gate or promote pushes its version; a rollback pops the version it replaced and lands on its target.
    Before the first per-move tag, the history is the summary tag a former release wrote."""
    moves = [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(MOVE_TAG))]
    if not moves:
        return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]
    stack = list(moves[0].get("base", []))
    for entry in moves:
        if entry["kind"] == "rollback":
            while stack and stack[-1] == entry["from"]:
                stack.pop()
            if stack and stack[-1] == entry["to"]:
                continue
        stack.append(entry["to"])
    return stack


def move(client: "MlflowClient", ws: Workspace, name: str, version: str, expected: "ModelVersion | None",
         how: str, kind: str) -> None:
    """Point the alias at ``version`` if it still points at ``expected`` (compare-and-set), and record it."""
    current = current_champion(client, name)  # re-read right before the write
    if _number(current) != _number(expected):
        raise ChampionMoved(
            f"{name}: the champion is v{_number(current) or '-'} now, not v{_number(expected) or '-'} as when this "
            f"move to v{version} was decided; nothing changed. Run it again to decide against the new champion")
    tags = _model_tags(client, name)
    _set_alias(client, name, version, expected)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    entry = {"kind": kind, "from": _number(expected), "to": version, "how": how, "at": now,
             "workspace": ws.identity[:12]}
    _record(client, name, entry, tags)
    line = f"champion: {name} v{_number(expected) or '-'} -> v{version} ({how})"
    client.set_registered_model_tag(name, LAST_MOVE_TAG, f"{now} {line}")
    client.set_model_version_tag(name, version, SINCE_TAG, now)
    client.set_model_version_tag(name, version, HOW_TAG, how)
    print(line)
    after = _number(current_champion(client, name))
    if after != version:
        print(f"champion: another process moved {name}'s alias to v{after} at the same moment; "
              f"both moves are in the {MOVE_TAG}* tags")


def record_interrupted_move(client: "MlflowClient", ws: Workspace, name: str, version: str, how: str) -> None:
    """The alias already points at ``version`` but no move says so: a gate killed between moving the alias and
    writing its record (``move``). Write the record now, so history and rollback know the move."""
    tags = _model_tags(client, name)
    before = replay(tags)
    entry = {"kind": "gate", "from": before[-1] if before else "", "to": version,
             "how": f"{how} (recorded after an interrupted move)", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "workspace": ws.identity[:12]}
    _record(client, name, entry, tags)
    client.set_model_version_tag(name, version, HOW_TAG, entry["how"])
    print(f"champion: {name} v{version} holds the alias, but its move was not recorded (interrupted): recorded now")


def _record(client: "MlflowClient", name: str, entry: dict, tags: dict[str, str]) -> None:
    """Write one move as a tag of its own, then the summary tag. ``tags``: the model's tags before the move."""
    if not any(key.startswith(MOVE_TAG) for key in tags):  # the first per-move tag keeps the summary before it
        entry["base"] = replay(tags)[-HISTORY_KEPT:]
    client.set_registered_model_tag(name, f"{MOVE_TAG}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}",
                                    json.dumps(entry))
    moved = history(client, name)  # re-read: every writer's moves, this one included
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(moved[-HISTORY_KEPT:]))


def _set_alias(client: "MlflowClient", name: str, version: str, expected: "ModelVersion | None") -> None:
    """Write the alias; a writer that lost the race to create it is refused like any other moved champion.

    MLflow's SQL store writes an alias with ``session.merge`` (a SELECT, then an INSERT when no row is
    there), so two processes creating the first champion at once both INSERT and one of them fails on the
    table's primary key. That loser saw "no champion" and is now wrong about it: it is a ChampionMoved."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    except MlflowException as failed:
        now = _number(current_champion(client, name))
        if now == _number(expected):
            raise
        raise ChampionMoved(f"{name}: another process set the champion to v{now} while this move to v{version} "
                            f"was writing it; nothing changed. Run it again to decide against v{now}") from failed


def _not_found(error: Exception) -> bool:
    """True only for "no such registered model" or "no such alias": what "no champion yet" means."""
    code = getattr(error, "error_code", "")
    text = str(error).lower()
    # The SQL store answers a missing alias with INVALID_PARAMETER_VALUE "Registered model alias ... not found."
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                  and "not found" in text)


def _model_tags(client: "MlflowClient", name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException as error:
        if _not_found(error):
            return {}
        raise


def _number(version: "ModelVersion | None") -> str:
    return "" if version is None else str(version.version)

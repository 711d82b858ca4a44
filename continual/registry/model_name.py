"""Which registered model a stream's rounds become versions of, and which stream owns a name on a shared server.

- ``tracking.registered_model`` set: that name, exactly as written (``models:/NAME@champion``, `continual serve`
  and deployment configs refer to it).
- unset or empty (the default): ``continual-<first 8 hex of the workspace id>``. The id
  (``.continual/workspace_id``) is committed, so every clone of a stream registers into the same model, and two
  streams never share one by accident. The folder's name is left out on purpose: a clone may live in a folder
  of another name, and the stream must keep its model.

On one server, a registered model belongs to the workspace its first version was trained in (the earliest
version whose workspace is known). A workspace that would register into a model owned by another is refused
before it logs anything (``NameTaken``): two streams on one name would share one ``champion`` alias. A
workspace's clones share its id, so they continue its model.

``mlflow`` is never imported here at module level: `continual --help` and `continual serve` stay cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from continual.registry.tags import FOLDER_TAG, LINEAGE_TAG, PARENT_RUN_TAG, WORKSPACE_TAG
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

OWNER_LOOKUP = 20  # versions read (oldest first) to find one whose workspace is known


def registered_model(ws: Workspace, params: dict[str, Any]) -> str:
    """The registered-model name of this workspace: ``tracking.registered_model``, else its derived default."""
    name = (params.get("tracking") or {}).get("registered_model")
    return str(name) if name not in (None, "") else default_name(ws)


def default_name(ws: Workspace) -> str:
    return f"continual-{ws.identity[:8]}"


class NameTaken(ValueError):
    """The registered model belongs to another workspace: nothing was logged or registered."""


@dataclass(frozen=True)
class Owner:
    workspace: str  # the id, 12 characters
    run_id: str  # the round run of the version that made it the owner


def version_workspace(client: "MlflowClient", version: "ModelVersion") -> str:
    """The id (12 characters) of the workspace a version was trained in; "" when unknown (registered by hand).
    Its ``workspace`` tag, else the workspace part of its run's lineage tag (versions from before the tag)."""
    known = (version.tags or {}).get(WORKSPACE_TAG)
    if known:
        return known
    run = _run(client, version.run_id)
    line = run.data.tags.get(LINEAGE_TAG, "") if run else ""  # strategy:params-hash:workspace
    return line.rsplit(":", 1)[-1] if line.count(":") >= 2 else ""


def owner(client: "MlflowClient", name: str) -> Owner | None:
    """The workspace that owns registered model ``name`` (None: no such model, or no version of known origin)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'", max_results=OWNER_LOOKUP,
                                                order_by=["version_number ASC"])
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for version in versions:
        workspace = version_workspace(client, version)
        if workspace:
            return Owner(workspace, version.run_id)
    return None


def refuse_if_owned_elsewhere(client: "MlflowClient", ws: Workspace, name: str, params: dict[str, Any],
                              uri: str) -> None:
    """Raise NameTaken when registered model ``name`` belongs to another workspace than ``ws``."""
    found = owner(client, name)
    mine = ws.identity[:12]
    if found is None or found.workspace == mine:
        return
    folder = _folder_of(client, found.run_id)
    where = f" at {folder}" if folder else ""
    explicit = (params.get("tracking") or {}).get("registered_model") not in (None, "")
    fix = (f"set tracking.registered_model in params.yaml to a name of this stream's own, or remove it (empty) "
           f"for this workspace's default, {default_name(ws)}" if explicit else
           "set tracking.registered_model in params.yaml to a name of this stream's own")
    raise NameTaken(
        f"the registered model {name!r} on {uri} belongs to another stream: its versions come from workspace "
        f"{found.workspace}{where}, and this is workspace {mine}. Two streams on one name would share one "
        f"champion alias, so the track stage stops here (the trained rounds are kept). Choose another name: "
        f"{fix}; then run `dvc repro` again (only the track stage reruns)")


def _run(client: "MlflowClient", run_id: str | None):
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":  # the run was deleted
            return None
        raise


def _folder_of(client: "MlflowClient", run_id: str | None) -> str:
    """The owner's workspace folder, from its lineage run's ``continual.workspace`` tag ("" when unknown)."""
    run = _run(client, run_id)
    parent = _run(client, run.data.tags.get(PARENT_RUN_TAG)) if run else None
    return parent.data.tags.get(FOLDER_TAG, "") if parent else ""

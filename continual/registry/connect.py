"""Where a workspace tracks, and connecting to that store: a client and the experiment id.

Training never waits on MLflow: the round stage only writes its folder, so a tracking outage fails the track
stage (in seconds, see ``FAIL_FAST``) and costs a retry of the logging, never a retrain.

``mlflow`` is imported inside functions: importing this module must stay cheap for ``continual --help``.
"""
from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from continual.registry import local_store
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient


class TrackingUnavailable(ValueError):
    """The tracking store did not answer: nothing was logged, and the round folders are untouched."""


# MLflow's own defaults (7 retries with backoff factor 2, 120 s per request: minutes) are for riding out
# rate limits; here a dead server must fail the track stage in seconds, and the next `dvc repro` retries
# it. Names as mlflow/environment_variables.py (3.17) reads them, at each request. A value the user set wins.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri(ws: Workspace, params: dict[str, Any]) -> str:
    """Where this workspace tracks: ``$MLFLOW_TRACKING_URI``, else ``tracking.uri``, else its own SQLite store."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or (params.get("tracking") or {}).get("uri")
            or local_store.store_uri(ws))


def follow_tracking_uri(ws: Workspace, params: dict[str, Any]) -> str:
    """``tracking_uri``, once a moved or copied workspace's own store points here (``local_store.follow_move``):
    what every command that opens the store calls first."""
    uri = tracking_uri(ws, params)
    local_store.follow_move(ws, uri)
    return uri


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

    from continual.registry.race_safe_client import RaceSafeClient  # here: it imports mlflow

    uri = follow_tracking_uri(ws, params)
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


class Tracking:
    """A workspace's tracking store for one stage: connected on first use, then the same connection throughout,
    so a stage with nothing to log or gate never contacts the store."""

    def __init__(self, ws: Workspace, params: dict[str, Any]) -> None:
        self.ws, self.params = ws, params

    @cached_property
    def _connection(self) -> tuple["MlflowClient", str]:
        return connect(self.ws, self.params)

    @property
    def client(self) -> "MlflowClient":
        return self._connection[0]

    @property
    def experiment_id(self) -> str:
        return self._connection[1]

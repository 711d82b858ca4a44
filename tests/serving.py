"""The model server for tests: a registry holding tiny models, logged as rounds log them, and the real server
(`python -m service.serve` under gunicorn on 127.0.0.1), started and stopped."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "tiny-clf"


def make_registry(folder: Path) -> str:
    """A fresh sqlite tracking store with its artifacts under ``folder``; returns the tracking URI."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def register_tiny_model(tracking_uri: str, model_dir: Path, round_index: int, arrival: str,
                        name: str = MODEL_NAME, alias: str | None = "champion", tags: dict | None = None) -> str:
    """Log ``model_dir`` as a round does (pyfunc), tag the version, point ``alias`` at it."""
    import mlflow  # imported here: mlflow's import takes seconds, and a benchmark that only starts a server needs none
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # set + restore the global URI

    from continual.registry.register import log_pooled_model

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("serving-tests")
    artifacts = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("serving-tests", artifact_location=artifacts.as_uri()))
    with _use_tracking_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id):
        info = log_pooled_model(model_dir, registered_model_name=name)
    version = str(info.registered_model_version)
    round_key = f"{round_index:04d}-{arrival}"
    tags = {"round": str(round_index), "round_key": round_key, "arrival": arrival, "data_hash": f"hash-{round_key}",
            **(tags or {})}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def move_alias(tracking_uri: str, version: str, name: str = MODEL_NAME, alias: str = "champion") -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(name, alias, version)


def free_port() -> int:
    """A loopback port nothing listens on now: a server may take it, and a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, log: Path, timeout_s: float = 90,
               path: str = "/v2/health/ready", interval_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # the master accepts at once; the connection waits until the worker has loaded the model
        time.sleep(interval_s)
    pytest.fail(f"server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextmanager
def gunicorn_server(args: list[str], folder: Path, env: dict[str, str] | None = None,
                    ready_path: str = "/v2/health/ready") -> Iterator[dict]:
    """``service.serve ARGS`` on a free loopback port, its log in ``folder``, Prometheus in multiprocess mode;
    yields {"base", "port", "log", "pid" (the master's)} once ``ready_path`` answers 200 (/v2/health/live: started,
    with or without a model), and stops the server (and its workers) afterwards."""
    port, log = free_port(), folder / "server.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus"), "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    command = [sys.executable, "-m", "service.serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("w") as output:
        # Own session: if the master does not stop, its whole group (master and workers) can be killed.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log, path=ready_path)
        yield {"base": base, "port": port, "log": log, "pid": process.pid}
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, and its workers. SIGINT: gunicorn's quick stop; SIGTERM's graceful
    stop waits out graceful_timeout while a client still holds an idle keep-alive connection (gunicorn 26 gthread)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

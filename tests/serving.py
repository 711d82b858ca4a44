"""The real model server for tests: `python -m service.serve` under gunicorn on 127.0.0.1, started and stopped."""
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, log: Path, timeout_s: float = 90,
               path: str = "/v2/health/ready") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # the master accepts at once; the connection waits until the worker has loaded the model
        time.sleep(0.25)
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

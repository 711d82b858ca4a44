"""One drift view per server: with two gunicorn workers that each answered part of the traffic, both workers'
GET /monitoring and status page score the union of the two windows and say that it covers two workers
(service.monitoring.shared_window)."""
from __future__ import annotations

import http.client
import json
import time

import psutil
import pytest

from serving import gunicorn_server

TEXTS_PER_WORKER = 30


def worker_holding(master: int, client_port: int) -> int | None:
    """The worker process that holds the server side of the connection from ``client_port``."""
    for child in psutil.Process(master).children():
        for connection in child.net_connections("tcp"):
            if connection.raddr and connection.raddr.port == client_port:
                return child.pid
    return None


def call(connection: http.client.HTTPConnection, method: str, path: str, body: dict | None = None,
         accept: str = "application/json") -> tuple[int, str]:
    connection.request(method, path, body=None if body is None else json.dumps(body),
                       headers={"Content-Type": "application/json", "Accept": accept})
    response = connection.getresponse()
    return response.status, response.read().decode()


@pytest.mark.slow
def test_every_worker_shows_the_whole_servers_drift(monitored_model_dir, tmp_path):
    args = ["--model-uri", str(monitored_model_dir), "--workers", "2", "--threads", "2", "--set", "compute_threads=1",
            "--set", "monitoring_interval_s=1", "--set", "monitoring_min_texts=20"]
    with gunicorn_server(args, tmp_path) as server:
        connections: dict[int, http.client.HTTPConnection] = {}  # worker pid -> a keep-alive connection it holds
        deadline = time.monotonic() + 60
        while len(connections) < 2:
            assert time.monotonic() < deadline, "no connection reached the second worker"
            connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=10)
            assert call(connection, "GET", "/v2/health/live")[0] == 200
            pid = worker_holding(server["pid"], connection.sock.getsockname()[1])
            if pid is None or pid in connections:
                connection.close()
            else:
                connections[pid] = connection
        for index, connection in enumerate(connections.values()):
            texts = [f"worker {index} text {i}" for i in range(TEXTS_PER_WORKER)]
            assert call(connection, "POST", "/predict", {"texts": texts})[0] == 200

        while True:  # each worker publishes its window at its next interval, then the leader scores the union
            views = {pid: json.loads(call(c, "GET", "/monitoring")[1]) for pid, c in connections.items()}
            if all((v["latest"] or {}).get("texts") == 2 * TEXTS_PER_WORKER for v in views.values()):
                break
            assert time.monotonic() < deadline, {pid: (v["window"], v["latest"]) for pid, v in views.items()}
            time.sleep(0.5)
        for view in views.values():
            assert view["window"]["texts"] == 2 * TEXTS_PER_WORKER and view["window"]["workers"] == 2
            assert view["latest"]["workers"] == 2
        first, second = views.values()
        assert first["latest"]["scores"] == second["latest"]["scores"]  # one check, not one per worker
        for connection in connections.values():
            status, page = call(connection, "GET", "/", accept="text/html")
            assert status == 200 and f"over {2 * TEXTS_PER_WORKER} texts from 2 workers" in page
            connection.close()
    assert any((tmp_path / "prometheus" / "drift").iterdir())
    with gunicorn_server(args, tmp_path) as server:  # a restart on the same folder clears the shared windows
        assert not any((tmp_path / "prometheus" / "drift").glob("history-*"))

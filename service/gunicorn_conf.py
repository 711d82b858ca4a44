"""Gunicorn settings for the model server, usable on their own:

    gunicorn -c python:service.gunicorn_conf service.wsgi:app

``service.serve.run_server`` uses the same hooks. Each worker loads its own copy of the model (the
app is not preloaded): torch is never imported in the master, so forking stays safe and cheap.
"""
from __future__ import annotations

import os
from pathlib import Path

bind = os.environ.get("CONTINUAL_SERVE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONTINUAL_SERVE_WORKERS", "1"))
threads = int(os.environ.get("CONTINUAL_SERVE_THREADS", "4"))  # > 1: concurrent requests can share a batch
worker_class = "service.gunicorn_worker.ThreadWorker"  # gthread, minus a shutdown deadlock
timeout = 120  # a worker loads its model while booting; MiniLM from a remote artifact store takes a while
# A request takes well under a second. Gunicorn 26's graceful stop (SIGTERM) waits this long whenever
# a client holds an idle keep-alive connection, so keep it short.
graceful_timeout = 10
accesslog = "-"
# Gunicorn 26's control socket has one default path per user: two servers on a host would collide.
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # heartbeats off a slow disk


def on_starting(server) -> None:
    """Prometheus multiprocess files of an earlier run would be summed into this one's: remove them."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (served model version) from the merged /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

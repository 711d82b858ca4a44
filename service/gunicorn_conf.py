"""Gunicorn settings for the model server, usable on their own:

    gunicorn -c python:service.gunicorn_conf service.wsgi:app

``service.serve.run_server`` uses the same hooks. Each worker loads its own copy of the model (the
app is not preloaded): torch is never imported in the master, so forking stays safe and cheap.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path



def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; a container's cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def compute_threads_per_worker(worker_count: int) -> int:
    """Intra-op threads per worker such that workers x threads = the usable cores: none oversubscribed."""
    return max(1, usable_cores() // max(worker_count, 1))


# Workers: one per usable core, at most 4 (each holds its own model: 25 MB as int8 ONNX, 1 GB under torch).
# Each worker computes with cores // workers threads (compute_threads; set CONTINUAL_COMPUTE_THREADS to choose).
# On 2 cores: 2 workers of 1 thread. Measured in docs/benchmarks.md ("Quantized serving").
bind = os.environ.get("CONTINUAL_SERVE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONTINUAL_SERVE_WORKERS") or min(usable_cores(), 4))
threads = int(os.environ.get("CONTINUAL_SERVE_THREADS", "4"))  # > 1: concurrent requests can share a batch
worker_class = "service.gunicorn_worker.ThreadWorker"  # gthread, minus a shutdown deadlock
timeout = 120  # a worker loads its model while booting; MiniLM from a remote artifact store takes a while
# A request takes well under a second: a graceful stop (SIGTERM) waits at most this long for those in flight.
# Idle keep-alive connections do not hold it up (service.gunicorn_worker closes them when the worker stops).
graceful_timeout = 10
accesslog = "-"
# gunicorn's default line plus the request id the app answered with (X-Request-ID): a client's report finds its line.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
# Gunicorn 26's control socket has one default path per user: two servers on a host would collide.
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # heartbeats off a slow disk


# What prometheus_client's multiprocess mode names its files: {type}[_{gauge mode}]_{pid}.db
PROMETHEUS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def check_multiproc_dir() -> list[Path]:
    """prometheus_client's files of an earlier run in $PROMETHEUS_MULTIPROC_DIR (created if missing), and the
    drift monitor's shared windows (service.monitoring.shared_window).

    Raises ValueError if the folder holds anything else: it is not ours to clean or to fill (pointed at a
    workspace, it holds mlflow.db, which the old cleanup deleted), and the collector reads every ``*.db``."""
    from service.monitoring.shared_window import FOLDER

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return []
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    entries = sorted(path.iterdir())
    foreign = [p.name for p in entries if not (PROMETHEUS_FILE.fullmatch(p.name) and p.is_file()
                                               or p.name == FOLDER and p.is_dir() and not p.is_symlink())]
    if foreign:
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR={folder} holds files prometheus_client did not write "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): "
                         "point it at an empty folder of its own")
    return entries


def on_starting(server) -> None:
    """Before any worker: remove Prometheus multiprocess files of an earlier run (they would be summed into this
    one's), and create a new SQLite MLflow database once, which racing workers would break."""
    from service.config import load_config
    from service.model_source import create_sqlite_stores
    from service.redaction import install_log_redaction

    install_log_redaction()  # the master's log lines too (plain `gunicorn -c python:service.gunicorn_conf`)
    try:
        stale = check_multiproc_dir()
        # service.serve hands its config to gunicorn; `gunicorn service.wsgi:app` has only the environment.
        settings = load_config(getattr(getattr(server, "app", None), "service_config", None))
    except ValueError as error:
        raise RuntimeError(str(error)) from None  # gunicorn prints a RuntimeError and exits, no traceback
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    uris = [uri for _, uri in settings.models] or ([settings.source_uri] if settings.source_uri else [])
    create_sqlite_stores(uris, settings.tracking_uri, settings.registry_uri)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (served model version) from the merged /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

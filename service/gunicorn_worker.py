"""Gunicorn's threaded worker with a quick stop (SIGINT/SIGQUIT) that cannot hang.

Gunicorn 26.2's ``ThreadWorker.handle_quit`` calls ``ThreadPoolExecutor.shutdown()`` inside the signal
handler. When the signal lands while the main thread is in ``tpool.submit()`` (holding the executor's
non-reentrant ``_shutdown_lock``), the worker deadlocks until the master SIGKILLs it a graceful_timeout
later (CPython issue #121649). Seen here on Ctrl-C right after traffic. The base worker's quit just
exits; concurrent.futures then stops the pool at interpreter exit, letting running requests finish.
"""
from __future__ import annotations

from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker


class ThreadWorker(GunicornThreadWorker):
    def handle_quit(self, sig, frame) -> None:
        Worker.handle_quit(self, sig, frame)

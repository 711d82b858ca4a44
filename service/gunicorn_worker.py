"""Gunicorn's threaded worker with a quick stop (SIGINT/SIGQUIT) that cannot hang.

Gunicorn 26.2's ``ThreadWorker.handle_quit`` calls ``ThreadPoolExecutor.shutdown()`` inside the signal
handler. When the signal lands while the main thread is in ``tpool.submit()`` (holding the executor's
non-reentrant ``_shutdown_lock``), the worker deadlocks until the master SIGKILLs it a graceful_timeout
later (CPython issue #121649). Seen here on Ctrl-C right after traffic. The base worker's quit just
exits; concurrent.futures then stops the pool at interpreter exit, letting running requests finish.

It also answers what gunicorn refuses before the app sees the request (a request line over
``limit_request_line``, too many or too large headers, a malformed request line or header) in JSON,
``{"error": "..."}`` like every other refusal, where gunicorn writes an HTML page (found by the chaos
suite's fuzzing, benchmarks/chaos.py: a 5,000-character model name in the path).
"""
from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's contract (status, reason, message; the connection closes), JSON body."""
    body = json.dumps({"error": mesg or reason}).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# Worker.handle_error looks it up on the module at each call. Only this process (a worker of our server, or
# the master, which never writes HTTP errors) sees the change.
util.write_error = write_json_error


class ThreadWorker(GunicornThreadWorker):
    def handle_quit(self, sig, frame) -> None:
        Worker.handle_quit(self, sig, frame)

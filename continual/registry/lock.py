"""Registry decisions in one workspace, one at a time: a file lock, ``.continual/registry.lock``.

Across machines or clones sharing one server, the champion's compare-and-set and its per-move history tags
(``continual.registry.champion``) take over.
"""
from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from typing import Iterator

from continual.workspace.layout import Workspace

LOCK_FILE = ".continual/registry.lock"

_held = threading.local()


@contextmanager
def registry_lock(ws: Workspace) -> Iterator[None]:
    """Hold the workspace's registry lock (re-entrant within a thread): a stage takes it once, and what it
    calls that takes it too (``local_store.follow_move`` inside ``connect``) goes on without waiting."""
    path = ws.home / LOCK_FILE  # a DVC experiment's temporary copy shares its workspace's (Workspace.home)
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"promotion: waiting for another registry change in this workspace ({LOCK_FILE})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)  # closing the file releases the lock

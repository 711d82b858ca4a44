"""One drift view per server: under gunicorn each worker sees only the requests it answered, so the workers share
their windows through files and one of them (the leader) scores their union.

Every ``interval_s`` each worker writes its window (a few numbers per text, the embeddings in float16: about 0.4 MB
for 500 MiniLM texts) to ``<folder>/window-<model>-<pid>.npz``, atomically. The worker that holds the leader lock
(``flock`` on ``<folder>/leader-<model>``: released by the kernel when its process dies, so another worker takes
over at its next tick) merges the windows of the live workers that serve the same model version, scores them and
writes the bounded history to ``<folder>/history-<model>.json``; every worker's ``GET /monitoring`` and status page
read that file. The folder is ``$PROMETHEUS_MULTIPROC_DIR/drift``, which the master empties before any worker
starts; without it (one process) the monitor keeps its window in memory alone.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


FOLDER = "drift"  # under $PROMETHEUS_MULTIPROC_DIR; the master empties it with the Prometheus files at start


class Window(NamedTuple):
    predicted: np.ndarray
    confidence: np.ndarray
    lengths: np.ndarray
    embeddings: np.ndarray | None


def shared_folder() -> Path | None:
    root = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return Path(root) / FOLDER if root else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


class SharedWindows:
    def __init__(self, folder: Path, model_name: str):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = hashlib.sha256(model_name.encode()).hexdigest()[:12]  # any model name is a safe file name
        self.pid = os.getpid()
        self._leader_file = None

    def _path(self, kind: str, pid: int | None = None) -> Path:
        return self.folder / (f"{kind}-{self.key}" + (f"-{pid}.npz" if pid is not None else ".json"))

    def _write(self, path: Path, write) -> None:
        partial = path.with_name(f".{path.name}.{self.pid}.partial")
        with partial.open("wb") as out:
            write(out)
        os.replace(partial, path)

    def publish(self, version: str, window: Window) -> None:
        """This worker's window, for the leader (an empty window removes the file)."""
        path = self._path("window", self.pid)
        if not len(window.predicted):
            path.unlink(missing_ok=True)
            return
        arrays = {"predicted": window.predicted, "confidence": window.confidence, "lengths": window.lengths,
                  "version": np.array(version)}
        if window.embeddings is not None:
            arrays["embeddings"] = window.embeddings.astype(np.float16, copy=False)
        self._write(path, lambda out: np.savez(out, **arrays))

    def lead(self) -> bool:
        """True while this worker holds the leader lock (taken at the first call that finds it free)."""
        if self._leader_file is None:
            handle = open(self.folder / f"leader-{self.key}", "a+b")  # noqa: SIM115 - held for the process's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._leader_file = handle
        return True

    def _live_windows(self, version: str, keys: tuple[str, ...], prune: bool = False) -> Iterator[dict[str, Any]]:
        """The arrays ``keys`` of each live worker's window for ``version`` (embeddings only where it has them);
        ``prune`` removes the files of dead workers."""
        for path in self.folder.glob(f"window-{self.key}-*.npz"):
            if not _alive(int(path.stem.rsplit("-", 1)[1])):
                if prune:
                    path.unlink(missing_ok=True)
                continue
            try:
                with np.load(path) as data:
                    if str(data["version"]) != version:
                        continue
                    arrays = {key: data[key] for key in keys if key != "embeddings" or key in data}
            except (OSError, ValueError, KeyError):  # being replaced right now: it is read at the next check
                continue
            yield arrays

    def gather(self, version: str) -> tuple[Window | None, int]:
        """The union of the live workers' windows for ``version``, and how many workers it covers."""
        parts = [Window(a["predicted"], a["confidence"], a["lengths"],
                        a["embeddings"].astype(np.float32) if "embeddings" in a else None)
                 for a in self._live_windows(version, ("predicted", "confidence", "lengths", "embeddings"), prune=True)]
        if not parts:
            return None, 0
        embeddings = None if any(p.embeddings is None for p in parts) else np.concatenate([p.embeddings for p in parts])
        return Window(np.concatenate([p.predicted for p in parts]), np.concatenate([p.confidence for p in parts]),
                      np.concatenate([p.lengths for p in parts]), embeddings), len(parts)

    def texts(self, version: str) -> tuple[int, int]:
        """Texts in the live workers' windows for ``version`` and the number of those workers (no embeddings read)."""
        counts = [len(a["predicted"]) for a in self._live_windows(version, ("predicted",))]
        return sum(counts), len(counts)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        self._write(self._path("history"), lambda out: out.write(json.dumps(history).encode()))

    def read_history(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self._path("history").read_text())
        except (OSError, ValueError):
            return []

    def close(self) -> None:
        self._path("window", self.pid).unlink(missing_ok=True)
        if self._leader_file is not None:
            self._leader_file.close()
            self._leader_file = None

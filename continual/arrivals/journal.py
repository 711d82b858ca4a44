"""One ingest at a time, and an undo for one that fails or is killed half way.

Once an ingest starts writing, a failure undoes what was written (``_Undo``), and a journal
(.continual/ingest-journal.json) records what the undo needs: an ingest killed half way (SIGKILL, power loss:
no undo runs) is rolled back, or finished if it had already registered the arrival, by the next ingest or by
`continual repair` (``recover_interrupted_ingest``), or by `continual verify`, the first stage of `dvc repro`
(continual.arrivals.verify).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # a dependency of dvc

from continual.arrivals.parse import ArrivalError
from continual.workspace.files import paths_under, write_atomic
from continual.workspace.layout import INGEST_JOURNAL, Workspace


@contextmanager
def ingest_lock(ws: Workspace, wait: bool = True) -> Iterator[bool]:
    """An advisory lock on the workspace folder itself: no lock file, so a rejected arrival still leaves
    the workspace byte for byte as it was. Released when the process ends, however it ends. Yields False
    (without the lock) if ``wait`` is off and another ingest holds it."""
    fd = os.open(ws.root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def interrupted_ingest(ws: Workspace) -> dict | None:
    """The journal of an ingest that was killed half way, if any (None while an ingest is running)."""
    if not (ws.root / INGEST_JOURNAL).exists():
        return None
    with ingest_lock(ws, wait=False) as free:
        return read_journal(ws) if free else None  # held: the journal belongs to the ingest running now


def recover_after_crash(ws: Workspace) -> str | None:
    """`continual repair`'s part: ``recover_interrupted_ingest`` once no ingest runs."""
    with ingest_lock(ws):
        return recover_interrupted_ingest(ws)


def recover_interrupted_ingest(ws: Workspace) -> str | None:
    """Roll back what an ingest killed half way wrote, or finish it if it had already registered the arrival
    in stream.yaml (only `git add` was left). The caller holds the ingest lock. Returns what was done."""
    for stray in (ws.root / INGEST_JOURNAL).parent.glob(f".{Path(INGEST_JOURNAL).name}.*.tmp"):
        stray.unlink(missing_ok=True)  # a journal whose own atomic write was cut short: nothing began
    journal = read_journal(ws)
    if journal is None:
        return None
    key = journal["key"]
    if key in ws.stream():  # the commit point had passed: stage the files, as the ingest would have
        _unblock_git_index(ws, journal)
        tracked = [ws.arrival_dvc_file(key), ws.arrivals_dir / ".gitignore", ws.stream_file]
        run_command(["git", "add", "--", *(str(p.relative_to(ws.root)) for p in tracked if p.exists())], ws.root)
        done = f"finished registering {key}: the ingest that registered it was killed before `git add`"
    else:
        _Undo.from_journal(ws, journal)()
        done = (f"rolled back {key}: its ingest (of {journal.get('source', '?')}) was killed half way; "
                "nothing of it is left, ingest the file again")
    for stray in [*ws.root.glob(".stream.yaml.*.tmp"), *ws.arrivals_dir.glob("..gitignore.*.tmp")]:
        stray.unlink(missing_ok=True)  # write_atomic's temporary files, cut short by the kill
    (ws.root / INGEST_JOURNAL).unlink(missing_ok=True)
    return done


def read_journal(ws: Workspace) -> dict | None:
    """The journal of the ingest that is writing now or was killed half way; None when there is none."""
    path = ws.root / INGEST_JOURNAL
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:  # written atomically, so never half written; but say so rather than guess
        raise ArrivalError(f"{path}: not a journal continual wrote ({e}); move it away") from None


def _unblock_git_index(ws: Workspace, journal: dict) -> None:
    """git leaves .git/index.lock behind when it is killed, and every later `git add` then fails. Remove it
    only if the killed ingest can have made it (newer than the journal) and no git process runs here."""
    lock = ws.root / ".git" / "index.lock"
    try:
        made = lock.stat().st_mtime
    except FileNotFoundError:
        return
    if made < journal.get("started", float("inf")) or _git_running_in(ws.root):
        return
    lock.unlink(missing_ok=True)


def _git_running_in(root: Path) -> bool:
    for process in psutil.process_iter(["name", "cwd"]):
        try:
            if process.info["name"] == "git" and process.info["cwd"] and Path(process.info["cwd"]) == root:
                return True
        except psutil.Error:
            continue
    return False


def register(ws: Workspace, key: str, files: dict[Path, bytes], old_keys: list[str], source: Path) -> None:
    """Write the arrival ``key``'s ``files``, `dvc add` it, register it in stream.yaml (the commit point) and
    stage it for git, under the journal; any failure puts everything back. The caller holds the ingest lock."""
    undo = _Undo(ws, key)
    journal = ws.root / INGEST_JOURNAL
    made_folder = not journal.parent.exists()  # .continual/: a workspace made before `continual init` wrote it
    journal.parent.mkdir(exist_ok=True)
    write_atomic(journal, json.dumps(undo.journal(ws, key, source)).encode())  # first: a kill from here on is undone
    try:
        ws.arrival_dir(key).mkdir(parents=True)
        for path, data in files.items():
            write_atomic(path, data)
        arrival = str(ws.arrival_dir(key).relative_to(ws.root))
        # --wait-for-lock: a `dvc repro` holds DVC's repo lock between its stages; wait rather than fail.
        run_command([dvc_executable(), "--wait-for-lock", "add", arrival], ws.root)
        write_atomic(ws.stream_file, ws.stream_text(old_keys + [key]).encode())  # the commit point
        tracked = [ws.arrival_dvc_file(key), ws.arrivals_dir / ".gitignore", ws.stream_file]
        run_command(["git", "add", "--", *(str(p.relative_to(ws.root)) for p in tracked)], ws.root)
    except BaseException:
        undo()
        journal.unlink(missing_ok=True)
        if made_folder:
            shutil.rmtree(journal.parent, ignore_errors=True)
        raise
    journal.unlink(missing_ok=True)


def dvc_executable() -> str:
    beside = Path(sys.executable).parent / "dvc"  # the dvc installed with this package, even if not on PATH
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def run_command(cmd: list[str], cwd: Path) -> None:
    """Run a git or dvc command of the ingest; RuntimeError with its output when it fails."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        output = (done.stderr or done.stdout).strip()
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {done.returncode}: {output}")


class _Undo:
    """What registering an arrival may change, captured before it starts, so a failure can put it back.

    Not restored: DVC's own lock files under .dvc/tmp. The git index is only written by the last step.
    Rolled back from the journal after a kill, the cache objects `dvc add` made stay (`dvc gc` drops them).
    """

    def __init__(self, ws: Workspace, key: str) -> None:
        self.saved = {
            path: path.read_bytes() if path.exists() else None
            for path in (ws.stream_file, ws.arrivals_dir / ".gitignore", ws.arrival_dvc_file(key))
        }
        new_dir = ws.arrival_dir(key)
        while not new_dir.parent.exists():  # the topmost folder this arrival creates (data/ in a new workspace)
            new_dir = new_dir.parent
        self.new_dir = new_dir
        self.cache = ws.root / ".dvc" / "cache"
        self.cache_before: set[Path] | None = paths_under(self.cache)

    @classmethod
    def from_journal(cls, ws: Workspace, journal: dict) -> "_Undo":
        undo = cls.__new__(cls)
        undo.saved = {ws.root / rel: None if data is None else base64.b64decode(data)
                      for rel, data in journal["saved"].items()}
        undo.new_dir = ws.root / journal["new_dir"]
        undo.cache, undo.cache_before = ws.root / ".dvc" / "cache", None
        return undo

    def journal(self, ws: Workspace, key: str, source: Path) -> dict:
        return {"key": key, "source": str(source), "pid": os.getpid(), "started": time.time(),
                "new_dir": self.new_dir.relative_to(ws.root).as_posix(),
                "saved": {path.relative_to(ws.root).as_posix(): None if data is None
                          else base64.b64encode(data).decode() for path, data in self.saved.items()}}

    def __call__(self) -> None:
        shutil.rmtree(self.new_dir, ignore_errors=True)
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            elif not path.exists() or path.read_bytes() != content:
                write_atomic(path, content)
        if self.cache_before is None:
            return
        # Objects `dvc add` put in the cache; reverse order removes files before their folders.
        for path in sorted(paths_under(self.cache) - self.cache_before, reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()

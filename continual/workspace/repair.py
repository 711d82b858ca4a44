"""Crash damage: what a process killed half way leaves behind that would block or litter the next command
(``crash_damage``), and how `continual repair` puts it right (``repair``)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import psutil  # a dependency of dvc
import yaml

from continual.workspace.files import write_atomic
from continual.workspace.layout import Workspace

REPAIR_HINT = "repair: run `continual repair`, then `dvc repro`"


def pid_alive(pid: int) -> bool:
    """A running process (a zombie is not: killed, it waits to be reaped, and where the reaper is slow or
    absent, as in some containers, it waits for ever)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def dead_round_temps(ws: Workspace) -> list[Path]:
    """``rounds/.KEY.tmp-PID`` folders whose writer is no longer running: never a round, only waste."""
    dead = []
    for folder in ws.round_temp_dirs():
        pid = folder.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            dead.append(folder)
    return dead


# dvc 3.67 rewrites dvc.lock in place (dvc/utils/serialize/_common.py, ``_dump_data`` opens it with "w+"),
# and .dvc/tmp/rwlock too (dvc/rwlock.py, ``_edit_rwlock``): a kill in the middle leaves an empty or cut
# file, and every later dvc command fails on it ("'./dvc.lock' validation failed", "Unable to read
# RWLock-file '.dvc/tmp/rwlock'. JSON structure is corrupted"). Upstream: treeverse/dvc#7615 (a stuck
# repository after an interrupted run: the corrupted rwlock) and #6097 (the rwlock update is not atomic).
def crash_damage(ws: Workspace) -> list[str]:
    """One line for each thing a killed process left that blocks or litters the workspace."""
    found = []
    problem = _dvc_lock_problem(ws)
    if problem:
        found.append(f"dvc.lock is damaged ({problem}): a dvc process was killed while rewriting it")
    rwlock = ws.root / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists() and _unreadable_json(rwlock):
        found.append(".dvc/tmp/rwlock is damaged (not JSON): a dvc process was killed while rewriting it")
    stale = _stale_rwlock_entries(rwlock)[1]
    if stale:
        found.append(f".dvc/tmp/rwlock holds {stale} entries of dvc processes that were killed (DVC drops one only "
                     "when a command needs its path; should the pid be reused, that command would be refused)")
    for folder in dead_round_temps(ws):
        found.append(f"{folder.relative_to(ws.root)}: a round folder whose writer was killed")
    return found


def _stale_rwlock_entries(path: Path) -> tuple[dict | None, int]:
    """(the rwlock without the entries of dead dvc processes, how many there were); (None, 0) if unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, 0

    def live(info) -> bool:
        try:
            return "dvc" in " ".join(psutil.Process(int(info["pid"])).cmdline())  # not a reused pid
        except (psutil.Error, KeyError, TypeError, ValueError):
            return False

    stale, kept = 0, {}
    for mode, paths in (data or {}).items():
        if not isinstance(paths, dict):
            kept[mode] = paths
            continue
        kept[mode] = {}
        for locked, infos in paths.items():
            many = isinstance(infos, list)
            alive = [info for info in (infos if many else [infos]) if live(info)]
            stale += (len(infos) if many else 1) - len(alive)
            if alive:
                kept[mode][locked] = alive if many else alive[0]
    return kept, stale


def dvc_processes(root: Path) -> list[int]:
    """Pids of dvc commands running in ``root`` (their working folder)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline, cwd = process.info["cmdline"] or [], process.info["cwd"]
            if cwd and Path(cwd) == root and any(Path(arg).name == "dvc" for arg in cmdline[:2]):
                found.append(process.info["pid"])
        except (psutil.Error, OSError):
            continue
    return found


def repair(ws: Workspace) -> list[str]:
    """Put right what ``crash_damage`` finds; one line per repair. Run it with no dvc command running."""
    done = []
    problem = _dvc_lock_problem(ws)
    if problem:
        kept = ws.root / ".continual" / f"dvc.lock.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        kept.parent.mkdir(exist_ok=True)
        os.replace(ws.root / "dvc.lock", kept)
        done.append(f"moved the damaged dvc.lock ({problem}) to {kept.relative_to(ws.root)}: `dvc repro` rebuilds "
                    "it, taking every round it had recorded from DVC's run cache, none retrained")
    rwlock = ws.root / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists() and _unreadable_json(rwlock):
        rwlock.unlink()
        done.append("removed the damaged .dvc/tmp/rwlock (DVC's record of running stages; none is running)")
    kept, stale = _stale_rwlock_entries(rwlock)
    if stale:
        write_atomic(rwlock, json.dumps(kept).encode())
        done.append(f"dropped {stale} entries of killed dvc processes from .dvc/tmp/rwlock")
    for folder in dead_round_temps(ws):
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"removed {folder.relative_to(ws.root)} (half written by a killed round)")
    return done


def _unreadable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return True
    return False


def _dvc_lock_problem(ws: Workspace) -> str:
    """Why DVC cannot read dvc.lock, or "" (also when there is none)."""
    path = ws.root / "dvc.lock"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as error:
        return str(error)
    if not text.strip():
        return "empty"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return f"not YAML: {str(error).splitlines()[0]}"
    if not isinstance(data, dict):
        return "not a mapping"
    try:
        from dvc.schema import COMPILED_LOCKFILE_SCHEMA  # what dvc checks it against
    except ImportError:
        return "" if isinstance(data.get("stages", {}), dict) else "no stages"
    try:
        COMPILED_LOCKFILE_SCHEMA(data)
    except Exception as error:  # noqa: BLE001 - voluptuous.Invalid and its kin
        return f"fails DVC's schema: {str(error)[:120]}"
    return ""

"""The one place that knows a workspace's on-disk layout.

    params.yaml  dvc.yaml  stream.yaml           (stream.yaml: the registered arrivals, in order)
    .continual/workspace_id                      (the workspace's uuid, which MLflow lineages carry; committed)
    data/arrivals/0001-NAME/{train,test}.jsonl   (+ arrival.json; tracked by data/arrivals/0001-NAME.dvc)
    rounds/0001-NAME/                            (one trained round: model/, buffer.jsonl, ewc.safetensors,
                                                  metrics.json, round.json)
    metrics/0001-NAME.json                       (the round's metrics, for `dvc metrics`)
    reports/                                     (accuracy matrix and curves, for `dvc plots`)
    .continual/ingest-journal.json               (only while an ingest writes, or after one was killed)
    .continual/finished-round/                   (hard links to the last round `continual round` finished)

Crash damage (``crash_damage``, ``repair``): what a process killed half way leaves behind that would block
the next command, and how `continual repair` puts it right.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

# \A...\Z, not ^...$: "$" also matches before a final "\n", and a name becomes a folder name.
ARRIVAL_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
VERIFIED_MARKER = ".continual/verified"
ID_FILE = ".continual/workspace_id"  # a uuid: MLflow lineages survive moving the workspace
INGEST_JOURNAL = ".continual/ingest-journal.json"  # what an ingest writing now would undo (continual.arrivals.ingest)
FINISHED_ROUND = ".continual/finished-round"  # the last round `continual round` finished, as hard links
ROUND_PARAMS = ("seed", "model", "train", "strategy", "export")  # what a round depends on: continual.rounds.round's, dvc.yaml's
REPAIR_HINT = "repair: run `continual repair`, then `dvc repro`"
MARKER = "stream.yaml"  # every workspace has one at its root: dvc.yaml reads it (vars), and no subfolder holds one
DVC_EXPERIMENTS = "exps"  # .dvc/tmp/exps/: where DVC runs temporary and queued experiments (Workspace.home)


class NotAWorkspace(LookupError):
    """A command that needs a workspace was run outside one."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> "Workspace":
        return cls(Path(root).resolve())

    @classmethod
    def find(cls, start: str | Path = ".") -> "Workspace":
        """The workspace that holds ``start``: the nearest folder at or above it with stream.yaml, the way git
        finds .git, so a command run from data/ or deeper acts on the workspace, not on a new one there."""
        here = Path(start).resolve()
        for folder in (here, *here.parents):
            if (folder / MARKER).is_file():
                return cls(folder)
        raise NotAWorkspace(f"{here} is not in a continual workspace (no {MARKER} there or in any folder above it); "
                            "run this inside one, pass -C WORKSPACE, or create one with `continual init DIR`")

    @property
    def home(self) -> Path:
        """The workspace this folder belongs to: its root, except in a copy that DVC runs an experiment in.

        `dvc exp run --temp` and queued experiments (`dvc exp run --queue`, `dvc queue start`) run the pipeline
        in a clone at ``<workspace>/.dvc/tmp/exps/[standalone/]tmpXXXXXXXX/`` (dvc 3.67,
        dvc/repo/experiments/executor/local.py: ``TempDirExecutor.from_stash_entry``), which DVC deletes once it
        has saved the experiment. What must outlive the copy (the MLflow store, the registry lock, the identity)
        is the workspace's own."""
        parts = self.root.parts
        for i in range(len(parts) - 5, -1, -1):
            if parts[i + 1:i + 4] == (".dvc", "tmp", DVC_EXPERIMENTS):
                home = Path(*parts[:i + 1])
                if (home / MARKER).is_file():
                    return home
        return self.root

    # -- files at the root -------------------------------------------------------------------
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def identity(self) -> str:
        """The workspace's uuid (``.continual/workspace_id``). ``continual init`` writes it and stages it for
        git, so a clone carries on the same MLflow lineages. A workspace made before that gets one on first
        use, with a note to commit it."""
        path = self.home / ID_FILE
        if _write_identity(path) and (self.home / "dvc.yaml").exists():  # scratch copies have no dvc.yaml
            print(f"continual: wrote {ID_FILE}, this workspace's identity in MLflow; commit it "
                  f"(git add {ID_FILE} && git commit) so that a clone continues the same lineages",
                  file=sys.stderr)
        return path.read_text().strip()

    @property
    def stream_file(self) -> Path:
        return self.root / "stream.yaml"

    @property
    def arrivals_dir(self) -> Path:
        return self.root / "data" / "arrivals"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # -- per arrival / round -------------------------------------------------------------------
    def arrival_dir(self, key: str) -> Path:
        return self.arrivals_dir / key

    def arrival_split_file(self, key: str, split: str) -> Path:
        """``train.jsonl`` or ``test.jsonl`` of an arrival: one JSON object (id, text, label) a line."""
        return self.arrival_dir(key) / f"{split}.jsonl"

    def arrival_record_file(self, key: str) -> Path:
        return self.arrival_dir(key) / "arrival.json"

    def arrival_dvc_file(self, key: str) -> Path:
        return self.arrivals_dir / f"{key}.dvc"

    @staticmethod
    def arrival_name(key: str) -> str:
        """The NAME of a key ``0001-NAME``."""
        return key.split("-", 1)[1]

    def round_dir(self, key: str) -> Path:
        return self.rounds_dir / key

    def round_metrics_file(self, key: str) -> Path:
        return self.metrics_dir / f"{key}.json"

    # -- the stream ----------------------------------------------------------------------------
    def stream(self) -> list[str]:
        """Registered arrival keys (``0001-tweets``, ...) in stream order."""
        if not self.stream_file.exists():
            return []
        rounds = (yaml.safe_load(self.stream_file.read_text()) or {}).get("rounds") or {}
        return sorted(rounds, key=lambda k: rounds[k]["index"])

    def stream_text(self, keys: list[str]) -> str:
        """The stream file for ``keys``: each round depends on the previous round's folder."""
        rounds = {}
        for i, key in enumerate(keys):
            prev = f"rounds/{keys[i - 1]}" if i else VERIFIED_MARKER
            rounds[key] = {"index": i + 1, "prev": prev, "prev_key": keys[i - 1] if i else ""}
        header = "# Written by `continual ingest`. dvc.yaml runs one round per entry, each after the one before.\n"
        return header + yaml.safe_dump({"rounds": rounds, "last": keys[-1] if keys else ""}, sort_keys=False)

    def next_key(self, name: str) -> str:
        return f"{len(self.stream()) + 1:04d}-{name}"

    def registered(self, key: str) -> list[str]:
        """The stream's keys, once ``key`` is known to be one of them (a key names a folder: never a path)."""
        keys = self.stream()
        if key not in keys:
            listed = ", ".join(keys) if keys else "none yet; add one with `continual ingest FILE --name NAME`"
            raise LookupError(f"{key!r} is not a round key registered in stream.yaml (registered: {listed})")
        return keys

    def previous_key(self, key: str) -> str | None:
        keys = self.registered(key)
        i = keys.index(key)
        return keys[i - 1] if i else None

    def keys_up_to(self, key: str) -> list[str]:
        keys = self.registered(key)
        return keys[: keys.index(key) + 1]

    def arrival_hash(self, key: str) -> str:
        """The arrival folder's content hash, computed from its files as they are now, the way DVC 3 hashes
        a folder: ``<md5>.dir``, the md5 of the JSON list of ``{"md5", "relpath"}`` sorted by relpath
        (dvc_data's ``Tree.as_bytes``). It equals the md5 that ``dvc.lock`` records for the round's arrival
        dependency, and the ``.dvc`` file's as long as the arrival is as ingested; an edited arrival gets a
        new hash, where the ``.dvc`` file would still hold the old one. "" when the folder is missing."""
        return dir_hash(self.arrival_dir(key))

    def recorded_arrival_hash(self, key: str) -> str:
        """The md5 the arrival's ``.dvc`` file records (what `dvc checkout` puts in data/arrivals/KEY); "" when
        the file is missing or unreadable."""
        try:
            outs = (yaml.safe_load(self.arrival_dvc_file(key).read_text()) or {}).get("outs") or []
            return str(outs[0].get("md5") or "")
        except (OSError, yaml.YAMLError, AttributeError, IndexError, TypeError):
            return ""

    def round_inputs(self, key: str, params: dict) -> dict:
        """Everything a round's result depends on, as DVC sees it: the arrival's content, the round params
        and the parent round's content (its round hash: metrics.json and round.json)."""
        prev = self.previous_key(key)
        parent = self.round_dir(prev) if prev else None
        parent_hash = (hashlib.sha256((parent / "metrics.json").read_bytes() + (parent / "round.json").read_bytes())
                       .hexdigest() if parent is not None and (parent / "metrics.json").exists() else None)
        inputs = {"key": key, "data_hash": self.arrival_hash(key), "parent": prev, "parent_hash": parent_hash,
                  "params": {name: params[name] for name in ROUND_PARAMS}}
        return json.loads(json.dumps(inputs))  # a copy, as it reads back from inputs.json

    def round_temp_dirs(self) -> list[Path]:
        """``rounds/.KEY.tmp-PID``: a round being written, or one whose process was killed while writing it."""
        return sorted(self.rounds_dir.glob(".*.tmp-*")) if self.rounds_dir.is_dir() else []


def dir_hash(folder: Path) -> str:
    """A folder's content hash as DVC 3 computes it: ``<md5>.dir``, the md5 of the JSON list of
    ``{"md5", "relpath"}`` sorted by relpath (dvc_data's ``Tree.as_bytes``); "" when the folder is missing."""
    if not folder.is_dir():
        return ""
    entries = sorted(({"md5": _file_md5(path), "relpath": path.relative_to(folder).as_posix()}
                      for path in folder.rglob("*") if path.is_file()), key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def dvc_cached(ws: Workspace, hashes: list[str]) -> set[str]:
    """Those of ``hashes`` (md5s as .dvc files and dvc.lock record them; a folder's ends in ``.dir``) whose every
    file is in the workspace's DVC cache: data DVC stored here, which `dvc checkout` can put back without a
    remote. Imports dvc (~0.5 s): call it only when something is already out of place."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(ws.root))
    except DvcException:  # no DVC here (or a broken config): nothing is known to be stored
        return set()
    with repo:
        cache = repo.cache.local

        def held(oid: str) -> bool:
            path = Path(cache.oid_to_path(oid))
            if not path.is_file():
                return False
            if not oid.endswith(".dir"):
                return True
            try:
                entries = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            return all(Path(cache.oid_to_path(entry["md5"])).is_file() for entry in entries)

        return {oid for oid in hashes if oid and held(oid)}


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_identity(path: Path) -> bool:
    """Create the identity file if it is missing, atomically (two first uses agree); True if this call made it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(uuid.uuid4().hex + "\n")
    try:
        os.link(tmp, path)  # fails if another process got there first: its id wins
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive create (a reader may see it half written)
        try:
            with path.open("x") as f:
                f.write(tmp.read_text())
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink()


# .continual/ holds scratch state (compare runs, the verify marker, lock files), except the workspace id,
# which is committed: it names the workspace's MLflow lineages, and a clone must continue them.
# rounds/ is DVC's (cached outputs). DVC ignores each round folder itself, but when a later stage of the
# same `dvc repro` fails (the track stage, MLflow down) it takes back the .gitignore lines that run added
# (dvc 3.67, dvc/repo/scm_context.py: SCMContext.__call__ on an exception), and the round, up to date,
# never gets them again: the folder would show up in `git status`, and `git add -A` would commit a model.
WORKSPACE_GITIGNORE = "/mlflow.db\n/mlartifacts/\n/rounds/\n/.continual/*\n!/.continual/workspace_id\n"


DVC_REMOTE = "storage"  # the name `continual init --remote URL` gives the workspace's default DVC remote


def create_workspace(root: str | Path, tracking_uri: str | None = None, remote: str | None = None) -> Workspace:
    """A git repository with DVC initialised, dvc.yaml, params.yaml, an empty stream and data/arrivals/, all staged.

    ``tracking_uri`` goes to params.yaml's ``tracking.uri``; ``remote`` becomes the default DVC remote in
    ``.dvc/config`` (the committed config, not config.local), so every clone pushes and pulls there."""
    import shutil
    import subprocess
    from importlib import resources

    ws = Workspace.at(root)
    if (ws.root / "dvc.yaml").exists():
        raise FileExistsError(f"{ws.root} is already a workspace (it has dvc.yaml)")
    ws.root.mkdir(parents=True, exist_ok=True)
    dvc = str(Path(__import__("sys").executable).parent / "dvc")

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=ws.root, check=True, stdout=subprocess.DEVNULL)

    if not (ws.root / ".git").exists():
        run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    template = resources.files("continual") / "template"
    for name in ("dvc.yaml", "params.yaml"):
        with resources.as_file(template / name) as src:
            shutil.copyfile(src, ws.root / name)
    if tracking_uri:
        set_tracking_uri(ws.params_file, tracking_uri)
    if remote:
        add_remote(ws, remote)
    ws.stream_file.write_text(ws.stream_text([]))
    ws.arrivals_dir.mkdir(parents=True, exist_ok=True)
    (ws.arrivals_dir / ".gitignore").touch()
    (ws.root / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    _write_identity(ws.root / ID_FILE)
    run("git", "add", "dvc.yaml", "params.yaml", "stream.yaml", ".gitignore", ".dvc", "data/arrivals/.gitignore",
        ID_FILE)
    return ws


def set_tracking_uri(params_file: Path, uri: str) -> None:
    """Write ``tracking.uri`` into a params.yaml, keeping its comments (the line the template ships)."""
    import re

    text = params_file.read_text()
    tracking = re.search(r"(?m)^tracking:\n", text)
    line = re.compile(r"(?m)^  uri: .*$")
    found = line.search(text, tracking.end()) if tracking else None
    if found is None:
        raise ValueError(f"{params_file} has no tracking.uri line to set")
    text = text[: found.start()] + f"  uri: {json.dumps(uri)}" + text[found.end():]
    if (yaml.safe_load(text).get("tracking") or {}).get("uri") != uri:
        raise ValueError(f"could not write tracking.uri {uri!r} into {params_file}")
    params_file.write_text(text)


def add_remote(ws: Workspace, url: str) -> None:
    """`dvc remote add -d storage URL`: the default remote, in .dvc/config. A local path is made absolute from
    the caller's folder (DVC would read a relative one from .dvc/)."""
    import subprocess

    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, "remote", "add", "-d", "-f", DVC_REMOTE, url], cwd=ws.root, capture_output=True,
                          text=True)
    if done.returncode:
        raise ValueError(f"dvc remote add {url} failed: {(done.stderr or done.stdout).strip()}")


# -- crashes ---------------------------------------------------------------------------------------------
# A round's folder is renamed into place when it is whole, but DVC records it (hashes it, copies it into its
# cache and run cache, rewrites dvc.lock) only after `continual round` has exited. A kill in between leaves
# a complete round that DVC does not know: the next `dvc repro` deletes it (DVC removes a stage's outputs
# before it runs the stage) and trains it again. So `continual round` keeps hard links to the round it just
# finished, and when DVC asks for the same round again with the same inputs, and has no record of that
# output, it puts the round back instead of training it (``restore_finished_round``).


def _pid_alive(pid: int) -> bool:
    """A running process (a zombie is not: killed, it waits to be reaped, and where the reaper is slow or
    absent, as in some containers, it waits for ever)."""
    import psutil  # a dependency of dvc

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
        if not pid.isdigit() or not _pid_alive(int(pid)):
            dead.append(folder)
    return dead


def _link_tree(src: Path, dst: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another filesystem, or none with hard links: a copy
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def keep_finished_round(ws: Workspace, key: str, inputs: dict) -> None:
    """Hard-link the round just written (and its metrics file) into .continual/finished-round/, replacing the
    round kept before. Costs no space while DVC's copies are the same files."""
    slot = ws.root / FINISHED_ROUND
    tmp = slot.with_name(f".{slot.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(ws.round_dir(key), tmp / "round")
    metrics = ws.round_metrics_file(key)
    if metrics.exists():
        shutil.copy2(metrics, tmp / "metrics.json")
    record = {**inputs, "output_hash": dir_hash(tmp / "round")}
    (tmp / "inputs.json").write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    old = slot.with_name(f".{slot.name}.old-{os.getpid()}")
    if slot.exists():
        os.replace(slot, old)
    os.replace(tmp, slot)
    shutil.rmtree(old, ignore_errors=True)
    for stale in slot.parent.glob(f".{slot.name}.*"):  # left by a `continual round` killed while keeping one
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def restore_finished_round(ws: Workspace, key: str, inputs: dict) -> bool:
    """Put back the kept round ``key`` if it was trained from exactly ``inputs`` and DVC has no record of
    that output (a kill came after the round was written and before DVC recorded it). With a record, DVC
    runs the stage again on purpose (`dvc repro -f`, an edited output): train. True if restored."""
    slot = ws.root / FINISHED_ROUND
    try:
        kept = json.loads((slot / "inputs.json").read_text())
    except (OSError, ValueError):
        return False
    output_hash = kept.pop("output_hash", None)
    if kept != inputs or not output_hash or ws.round_dir(key).exists():
        return False
    if output_hash in _locked_outputs(ws, key):
        return False
    tmp = ws.round_dir(key).with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(slot / "round", tmp)
    if dir_hash(tmp) != output_hash:  # a kept file changed since: do not trust it
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    os.replace(tmp, ws.round_dir(key))
    if (slot / "metrics.json").exists():
        ws.metrics_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(slot / "metrics.json", ws.round_metrics_file(key))
    return True


def _locked_outputs(ws: Workspace, key: str) -> set[str]:
    """The md5s dvc.lock records for rounds/KEY (none when the file is missing or unreadable)."""
    import yaml

    try:
        stage = ((yaml.safe_load((ws.root / "dvc.lock").read_text()) or {}).get("stages") or {}).get(f"round@{key}")
    except (OSError, yaml.YAMLError, AttributeError):
        return set()
    outs = (stage or {}).get("outs") or []
    return {out.get("md5", "") for out in outs if isinstance(out, dict) and out.get("path") == f"rounds/{key}"}


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
    import psutil  # a dependency of dvc

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
    import psutil  # a dependency of dvc

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
        from continual.arrivals.jsonl import write_atomic

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
    import yaml

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

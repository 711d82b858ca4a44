"""The one place that knows a workspace's on-disk layout.

    params.yaml  dvc.yaml  stream.yaml           (stream.yaml: the registered arrivals, in order)
    .continual/workspace_id                      (the workspace's uuid, which MLflow lineages carry; committed)
    data/arrivals/0001-NAME/{train,test}.jsonl   (+ arrival.json; tracked by data/arrivals/0001-NAME.dvc)
    rounds/0001-NAME/                            (one trained round: model/, buffer.jsonl, ewc.safetensors,
                                                  metrics.json, round.json)
    metrics/0001-NAME.json                       (the round's metrics, for `dvc metrics`)
    reports/                                     (accuracy matrix and curves, for `dvc plots`)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

# \A...\Z, not ^...$: "$" also matches before a final "\n", and a name becomes a folder name.
ARRIVAL_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
VERIFIED_MARKER = ".continual/verified"
ID_FILE = ".continual/workspace_id"  # a uuid: MLflow lineages survive moving the workspace


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> "Workspace":
        return cls(Path(root).resolve())

    # -- files at the root -------------------------------------------------------------------
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def identity(self) -> str:
        """The workspace's uuid (``.continual/workspace_id``). ``continual init`` writes it and stages it for
        git, so a clone carries on the same MLflow lineages. A workspace made before that gets one on first
        use, with a note to commit it."""
        path = self.root / ID_FILE
        if _write_identity(path) and (self.root / "dvc.yaml").exists():  # scratch copies have no dvc.yaml
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
        folder = self.arrival_dir(key)
        if not folder.is_dir():
            return ""
        entries = sorted(({"md5": _file_md5(path), "relpath": path.relative_to(folder).as_posix()}
                          for path in folder.rglob("*") if path.is_file()), key=lambda entry: entry["relpath"])
        return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


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


def create_workspace(root: str | Path) -> Workspace:
    """A git repository with DVC initialised, dvc.yaml, params.yaml, an empty stream and data/arrivals/."""
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
    ws.stream_file.write_text(ws.stream_text([]))
    ws.arrivals_dir.mkdir(parents=True, exist_ok=True)
    (ws.arrivals_dir / ".gitignore").touch()
    (ws.root / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    _write_identity(ws.root / ID_FILE)
    run("git", "add", "dvc.yaml", "params.yaml", "stream.yaml", ".gitignore", ".dvc", "data/arrivals/.gitignore",
        ID_FILE)
    return ws

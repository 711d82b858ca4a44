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

from continual.workspace.hashes import dir_hash

# \A...\Z, not ^...$: "$" also matches before a final "\n", and a name becomes a folder name.
ARRIVAL_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
VERIFIED_MARKER = ".continual/verified"
ID_FILE = ".continual/workspace_id"  # a uuid: MLflow lineages survive moving the workspace
INGEST_JOURNAL = ".continual/ingest-journal.json"  # what an ingest writing now would undo (continual.arrivals.journal)
FINISHED_ROUND = ".continual/finished-round"  # the last round `continual round` finished, as hard links
# What a round depends on: continual.rounds.round's, dvc.yaml's.
ROUND_PARAMS = ("seed", "model", "train", "strategy", "export")
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
        if write_identity(path) and (self.home / "dvc.yaml").exists():  # scratch copies have no dvc.yaml
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


def write_identity(path: Path) -> bool:
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

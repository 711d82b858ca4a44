"""The one place that knows a workspace's on-disk layout.

    params.yaml  dvc.yaml  stream.yaml           (stream.yaml: the registered arrivals, in order)
    data/arrivals/0001-NAME/{train,test}.jsonl   (+ arrival.json; tracked by data/arrivals/0001-NAME.dvc)
    rounds/0001-NAME/                            (one trained round: model/, buffer.jsonl, ewc.safetensors,
                                                  metrics.json, round.json)
    metrics/0001-NAME.json                       (the round's metrics, for `dvc metrics`)
    reports/                                     (accuracy matrix and curves, for `dvc plots`)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ARRIVAL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERIFIED_MARKER = ".continual/verified"


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

    def previous_key(self, key: str) -> str | None:
        keys = self.stream()
        i = keys.index(key)
        return keys[i - 1] if i else None

    def keys_up_to(self, key: str) -> list[str]:
        keys = self.stream()
        return keys[: keys.index(key) + 1]

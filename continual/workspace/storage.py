"""What a stream costs on disk: bytes per round folder in the workspace, and how the DVC cache grew with each
round (the objects a round's output added that no earlier round's output already held: DVC stores a file once
per content, so a tokenizer unchanged across rounds costs one copy)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from continual.workspace.layout import Workspace

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".bin")


@dataclass
class RoundBytes:
    key: str
    folder: int        # every file of rounds/<key>
    weights: int       # of which model weights (model/: safetensors, ONNX)
    cache_added: int | None  # new DVC cache objects of this round's output; None: not in dvc.lock yet


def tree_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (0 if there is none)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(all files, model weight files) under ``folder``."""
    weights = [f for f in (folder / "model").rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    return tree_bytes(folder), sum(f.stat().st_size for f in weights)


def _cache_object(ws: Workspace, md5: str) -> Path:
    return ws.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _round_objects(ws: Workspace, key: str, lock: dict) -> set[str] | None:
    stage = (lock.get("stages") or {}).get(f"round@{key}") or {}
    out = next((o for o in stage.get("outs", []) if o.get("path") == f"rounds/{key}"), None)
    if out is None or not str(out.get("md5", "")).endswith(".dir"):
        return None
    manifest = _cache_object(ws, out["md5"])
    if not manifest.is_file():
        return None
    return {out["md5"], *(entry["md5"] for entry in json.loads(manifest.read_text()))}


def stream_bytes(ws: Workspace) -> list[RoundBytes]:
    """One row per round folder on disk, in stream order."""
    lock_file = ws.root / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text()) or {} if lock_file.is_file() else {}
    seen: set[str] = set()
    rows = []
    for key in ws.stream():
        folder = ws.round_dir(key)
        if not (folder / "metrics.json").is_file():
            continue
        total, weights = folder_bytes(folder)
        objects = _round_objects(ws, key, lock)
        added = None
        if objects is not None:
            added = sum(_cache_object(ws, md5).stat().st_size for md5 in objects - seen
                        if _cache_object(ws, md5).is_file())
            seen |= objects
        rows.append(RoundBytes(key, total, weights, added))
    return rows


def cache_total(ws: Workspace) -> int:
    return tree_bytes(ws.root / ".dvc" / "cache")


def human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_storage(ws: Workspace) -> str:
    rows = stream_bytes(ws)
    if not rows:
        return ""
    lines = [f"{'round':<24} {'folder':>10} {'weights':>10} {'cache +':>10}"]
    lines += [f"{r.key:<24} {human(r.folder):>10} {human(r.weights):>10} {human(r.cache_added):>10}" for r in rows]
    total = sum(r.folder for r in rows)
    lines.append(f"{'all rounds':<24} {human(total):>10} {'':>10} "
                 f"{human(sum(r.cache_added or 0 for r in rows)):>10}")
    lines.append(f"DVC cache in all (arrivals, every round ever trained, experiments): {human(cache_total(ws))}")
    return "\n".join(lines)

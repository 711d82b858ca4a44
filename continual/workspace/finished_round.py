"""The last round `continual round` finished, kept as hard links so that a kill cannot cost a retraining.

A round's folder is renamed into place when it is whole, but DVC records it (hashes it, copies it into its
cache and run cache, rewrites dvc.lock) only after `continual round` has exited. A kill in between leaves
a complete round that DVC does not know: the next `dvc repro` deletes it (DVC removes a stage's outputs
before it runs the stage) and trains it again. So `continual round` keeps hard links to the round it just
finished (``keep_finished_round``), and when DVC asks for the same round again with the same inputs, and has
no record of that output, it puts the round back instead of training it (``restore_finished_round``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from continual.workspace.hashes import dir_hash
from continual.workspace.layout import FINISHED_ROUND, Workspace
from continual.workspace.repair import pid_alive


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
        if not pid.isdigit() or not pid_alive(int(pid)):
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
    try:
        stage = ((yaml.safe_load((ws.root / "dvc.lock").read_text()) or {}).get("stages") or {}).get(f"round@{key}")
    except (OSError, yaml.YAMLError, AttributeError):
        return set()
    outs = (stage or {}).get("outs") or []
    return {out.get("md5", "") for out in outs if isinstance(out, dict) and out.get("path") == f"rounds/{key}"}


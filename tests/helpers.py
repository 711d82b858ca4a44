"""What many test files share: commands run as a user runs them, workspaces and arrival files made as `continual
init` and `continual ingest` make them, arrival folders written straight into a stream for rounds, the tiny
model's rows, and texts that have broken servers before.

Test files import from here and from the other helper modules beside it (serving.py: servers, ports and a
registry of tiny models; round_folders.py; team_server.py; browser.py), never from one another: a helper has
one home. conftest.py imports this module, so it imports continual's modules only where a helper uses them: a
test file whose module does not import fails alone, and the rest of the suite still runs.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent  # this environment's continual, dvc, mlflow
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


# -- commands ------------------------------------------------------------------------------------


def run(cwd, *cmd, check: bool = True, **env_vars) -> subprocess.CompletedProcess:
    """``cmd`` in ``cwd`` as a user runs it: this environment's bin/ first on PATH, one torch thread, and no
    MLFLOW_TRACKING_URI from the test process unless given in ``env_vars``. With ``check``, a failure raises
    with the command's output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CONTINUAL_THREADS": "1", **env_vars}
    if "MLFLOW_TRACKING_URI" not in env_vars:
        env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def rounds_run(result: subprocess.CompletedProcess) -> list[str]:
    """The round stages a `dvc repro` ran, in order."""
    return re.findall(r"Running stage 'round@([^']+)'", result.stdout + result.stderr)


def registry(workspace: Path):
    """An MlflowClient on the workspace's own store (mlflow.db)."""
    from mlflow import MlflowClient  # mlflow's import takes seconds: only the tests that read a registry pay it

    return MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")


# -- workspaces and arrival files ------------------------------------------------------------------


def make_workspace(root: Path):
    """git + DVC in ``root`` with the template's params.yaml and dvc.yaml and an empty stream (no `continual init`:
    no workspace identity, no commit); returns its Workspace."""
    import continual
    from continual.workspace.layout import Workspace

    root.mkdir(parents=True)
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    template = Path(continual.__file__).parent / "template"
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(template / name, root / name)
    ws = Workspace.at(root)
    ws.stream_file.write_text(ws.stream_text([]))
    return ws


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every folder and file under root (path -> sha256 of its bytes), .git and .dvc included."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(skip):
            out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def labelled(per_label: int = 10, labels: tuple[str, ...] = ("neg", "pos"), prefix: str = "review") -> list[tuple]:
    return [(f"{prefix} {label} number {i}", label) for label in labels for i in range(per_label)]


def write_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = ("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_arrival(path: Path, labels: dict[str, str], n: int, salt: str) -> Path:
    """A CSV arrival: ``n`` rows of each label, its words plus ``salt`` (so two arrivals share no text)."""
    lines = ["text,label"] + [f"{words} {salt} number {i},{label}" for label, words in labels.items() for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- a stream of arrival folders, trained by run_round -------------------------------------------

WORDS = {"a": "apple banana pear", "b": "car truck bus", "c": "red blue green", "d": "dog cat horse"}


def build_stream(root, arrivals: list[list[str]], n_train=40, n_test=10):
    """Arrival folders written straight in the ingested layout (ingest itself is tested elsewhere); returns the
    Workspace."""
    from continual.workspace.layout import Workspace

    ws = Workspace.at(root)
    keys = [f"{i + 1:04d}-part{i + 1}" for i in range(len(arrivals))]
    for key, labels in zip(keys, arrivals):
        ws.arrival_dir(key).mkdir(parents=True)
        for split, n in (("train", n_train), ("test", n_test)):
            rows = [{"id": f"{key}-{split}-{label}-{i}", "text": f"{WORDS[label]} {i}", "label": label}
                    for label in labels for i in range(n)]
            (ws.arrival_dir(key) / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws.stream_file.write_text(ws.stream_text(keys))
    return ws


def tiny_params(model_dir, strategy: str, **train) -> dict:
    """The shipped params with the tiny model, ``strategy``, a 20-row replay buffer and fast training."""
    from continual.params import load_params

    params = load_params()
    params["model"]["base"] = str(model_dir)
    params["strategy"]["name"] = strategy
    params["strategy"]["replay"]["mem_size"] = 20
    params["train"].update({"epochs": 15, "lr": 3e-3, "head_lr": 3e-2, "batch_size": 32, **train})
    return params


def run_stream(ws, params: dict) -> list[dict]:
    """Every round of the workspace's stream, in order; their metrics."""
    from continual.rounds.round import run_round

    return [run_round(ws, key, params) for key in ws.stream()]


# -- the tiny model ------------------------------------------------------------------------------

TINY_ROWS = [{"text": f"{word} {i}", "label": label} for i in range(6)
             for word, label in (("good great fine", "pos"), ("bad awful sad", "neg"), ("a table a chair", "neu"))]


def export_tiny(folder: Path) -> Path:
    """Give a tiny model folder what a round gives its model/: onnx/ with fp32, int8 and the int8 report."""
    from continual.model.encoder import load_classifier
    from continual.model.evaluation import accuracy
    from continual.rounds.export import export_round_model

    model, tokenizer = load_classifier(folder)
    fp32 = accuracy(model, tokenizer, TINY_ROWS, 8)[0]
    export_round_model(model, tokenizer, folder, {"0001-a": TINY_ROWS}, {"0001-a": fp32}, {"int8_per_channel": True}, 8)
    return folder


# Texts that have broken tokenizers, JSON and servers: empty, blank, every Unicode line separator, control
# characters, right-to-left scripts, zero-width characters, a byte-order mark, and texts past any length limit.
HOSTILE_TEXTS = [
    "a quiet morning", "apple banana pear 3", "car truck bus", "dog cat horse", "", " ",
    "tab\there", "next line\u0085inside", "line\u2028separator", "para\u2029graph", "form\x0cfeed", "\x1c\x1d\x1e",
    "emoji 😀🎉 party", "עברית מימין לשמאל", "العربية", "zero\u200bwidth", "\ufeffbom first", "mixed 日本語 text",
    "long " * 400, "x" * 20000,
] + [f"sentence number {i} about {'apples' if i % 2 else 'cars'}" for i in range(30)]

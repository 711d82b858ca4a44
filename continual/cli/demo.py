"""The demo: VADER's four sentiment domains arrive one after another in a fresh workspace.

Resumable: domains already ingested are skipped, and `dvc repro` trains only what is not up to date.
"""
from __future__ import annotations

import csv
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from continual.arrivals.ingest import ingest_file
from continual.params import load_params
from continual.reports.report import format_matrix, format_rounds, load_round_metrics
from continual.workspace.create import create_workspace
from continual.workspace.layout import Workspace

VADER_DIR = Path(__file__).resolve().parents[2] / "data" / "vader"


def sample_domain(domain: str, n: int, seed: int) -> list[dict]:
    with open(VADER_DIR / f"{domain}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(f"{seed}:{domain}").shuffle(rows)
    return rows[:n] if n else rows


def dvc_repro(ws: Workspace) -> None:
    """`dvc repro` with this interpreter's bin folder first on PATH, so stages find `continual`."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    subprocess.run([os.path.join(bin_dir, "dvc"), "repro"], cwd=ws.root, env=env, check=True)


def run_demo(folder: Path, strategy: str | None = None) -> int:
    ws = Workspace.at(folder) if (folder / "dvc.yaml").exists() else create_workspace(folder)
    if strategy:
        text = ws.params_file.read_text()
        ws.params_file.write_text(re.sub(r"(?m)^(  name: ).*$", rf"\g<1>{strategy}", text, count=1))
    params = load_params(ws.params_file)
    done = {Workspace.arrival_name(k) for k in ws.stream()}
    for domain in params["demo"]["domains"]:
        if domain not in done:
            rows = sample_domain(domain, int(params["demo"]["per_domain"]), int(params["seed"]))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{domain}.csv"
                with open(path, "w", encoding="utf-8", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
                    writer.writeheader()
                    writer.writerows(rows)
                print(ingest_file(ws, path, domain, params).summary(), flush=True)
        dvc_repro(ws)
    rounds = load_round_metrics(ws)
    print("\n" + format_rounds(rounds))
    print("\naccuracy matrix (row: after round, column: evaluated on arrival)")
    print(format_matrix(rounds[-1]["accuracy_matrix"], rounds[-1]["arrivals"]))
    return 0

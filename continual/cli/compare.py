"""`continual compare`: replay the workspace's stream under several strategies (and seeds), side by side.

Each strategy and seed runs in its own scratch workspace (a copy of the arrivals, the params with
``strategy.name`` and ``seed`` overridden) and logs to the workspace's MLflow experiment as its own lineage
run, so MLflow overlays their curves. Scratch rounds are not registered as model versions.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from continual.rounds.safe_round import train_round
from continual.workspace.layout import Workspace


def scratch_workspace(ws: Workspace, folder: Path) -> Workspace:
    """A bare copy of the stream: the arrival folders, their .dvc pointers (for data hashes), stream.yaml."""
    shutil.rmtree(folder, ignore_errors=True)
    scratch = Workspace.at(folder)
    scratch.arrivals_dir.mkdir(parents=True)
    for key in ws.stream():
        shutil.copytree(ws.arrival_dir(key), scratch.arrival_dir(key))
        if ws.arrival_dvc_file(key).exists():
            shutil.copyfile(ws.arrival_dvc_file(key), scratch.arrival_dvc_file(key))
    shutil.copyfile(ws.stream_file, scratch.stream_file)
    return scratch


def run_stream(ws: Workspace, params: dict, strategy: str, seed: int) -> dict:
    from continual.registry.lineage import log_round

    scratch = scratch_workspace(ws, ws.root / ".continual" / "compare" / f"{strategy.replace('+', '_')}-seed{seed}")
    p = copy.deepcopy(params)
    p["strategy"]["name"], p["seed"] = strategy, seed
    p["tracking"]["register_models"] = False
    started = time.perf_counter()
    rounds = []
    for key in scratch.stream():
        rounds.append(train_round(scratch, key, p).metrics)
        log_round(scratch, key, p)
    last = rounds[-1]
    return {"strategy": strategy, "seed": seed, "avg_acc": last["avg_acc"], "forgetting_avg": last["forgetting_avg"],
            "forgetting_max": last["forgetting_max"], "bwt": last["bwt"],
            "train_seconds": sum(r["train_seconds"] for r in rounds), "wall_seconds": time.perf_counter() - started,
            "curve": [r["forgetting_avg"] for r in rounds], "acc_curve": [r["avg_acc"] for r in rounds]}


def compare(ws: Workspace, params: dict, strategies: list[str], seeds: list[int]) -> list[dict]:
    from continual.registry.connect import connect, tracking_uri
    connect(ws, params)  # creates the experiment with the workspace's artifact location
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri(ws, params))  # scratch runs log here
    results = [run_stream(ws, params, s, seed) for s in strategies for seed in seeds]
    out = ws.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_comparison(results, out / "compare_forgetting.png")
    return results


def summarise(results: list[dict]) -> list[dict]:
    """Mean and spread (population standard deviation) over seeds, per strategy."""
    rows = []
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        runs = [r for r in results if r["strategy"] == strategy]
        row = {"strategy": strategy, "seeds": len(runs)}
        for key in ("avg_acc", "forgetting_avg", "forgetting_max", "bwt", "train_seconds"):
            values = [r[key] for r in runs]
            row[key], row[key + "_sd"] = statistics.fmean(values), statistics.pstdev(values)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'strategy':<11} {'seeds':>5} {'final avg acc':>15} {'avg forgetting':>15} {'BWT':>15} {'train s':>9}"]
    for r in rows:
        lines.append(f"{r['strategy']:<11} {r['seeds']:>5} {r['avg_acc']:>8.3f} ±{r['avg_acc_sd']:.3f} "
                     f"{r['forgetting_avg']:>8.3f} ±{r['forgetting_avg_sd']:.3f} {r['bwt']:>8.3f} ±{r['bwt_sd']:.3f} "
                     f"{r['train_seconds']:>9.1f}")
    return "\n".join(lines)


def plot_comparison(results: list[dict], path: Path) -> Path:
    from continual.reports.plots import plot_two_panels

    def draw(left, right) -> None:
        for r in results:
            x = range(1, len(r["curve"]) + 1)
            label = f"{r['strategy']} (seed {r['seed']})"
            left.plot(x, r["curve"], "o-", label=label)
            right.plot(x, r["acc_curve"], "o-", label=label)
        for axis in (left, right):
            axis.set_xticks(range(1, max(len(r["curve"]) for r in results) + 1))

    return plot_two_panels(path, ("Average forgetting", "forgetting"), ("Average accuracy", "accuracy"), draw)

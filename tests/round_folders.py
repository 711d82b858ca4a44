"""Finished round folders written by hand per the round-folder contract (round.json, metrics.json, the model),
for tests of what reads rounds: tracking, promotion, the report, `continual ui`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from continual.params import load_params
from continual.workspace.layout import Workspace

NAMES = ["tweets", "movies", "amazon"]
ROWS = [[0.80], [0.74, 0.82], [0.72, 0.79, 0.85]]  # accuracy matrix: row r = after round r+1


def write_stream(root: Path, model_dir: Path, rows: list[list[float]], names: list[str],
                 strategy: str = "replay+ewc") -> Workspace:
    """A workspace whose stream has one finished round folder per row of the accuracy matrix."""
    ws = Workspace.at(root)
    keys = [f"{i + 1:04d}-{name}" for i, name in enumerate(names[: len(rows)])]
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.stream_file.write_text(ws.stream_text(keys))
    params = load_params()
    params["strategy"]["name"] = strategy
    for r, key in enumerate(keys):
        write_round(ws, keys, r, rows, model_dir, {k: params[k] for k in ("seed", "model", "train", "strategy")})
    return ws


def write_round(ws: Workspace, keys: list[str], r: int, rows: list[list[float]], model_dir: Path,
                params: dict) -> None:
    folder = ws.round_dir(keys[r])
    shutil.copytree(model_dir, folder / "model", dirs_exist_ok=True)
    row, earlier = rows[r], range(r)
    forgetting = {keys[j]: round(max(rows[i][j] for i in range(j, r)) - row[j], 6) for j in earlier}
    metrics = {
        "round": r + 1, "key": keys[r], "arrivals": keys[: r + 1], "accuracy_matrix": rows[: r + 1],
        "acc": dict(zip(keys, row)), "avg_acc": sum(row) / len(row), "forgetting": forgetting,
        "forgetting_avg": sum(forgetting.values()) / r if r else None,
        "forgetting_max": max(forgetting.values()) if r else None,
        "bwt": sum(row[j] - rows[j][j] for j in earlier) / r if r else None,
        "acc_before_update": 0.5 if r else None, "examples": 800, "examples_per_s": 31.2,
        "train_seconds": 51.0, "wall_seconds": 70.3, "buffer_size": 500,
        "phase_seconds": {"load": 2.5, "train": 51.0, "export": 1.2}, "head_refit_lambda": 3.16,
        "confusion": {"labels": ["neg", "neu", "pos"], "matrix": [[5, 1, 0], [1, 4, 1], [0, 2, 6]]},
    }
    info = {
        "key": keys[r], "index": r + 1, "arrival": keys[r].split("-", 1)[1], "parent": keys[r - 1] if r else None,
        "strategy": params["strategy"]["name"], "labels": ["neg", "neu", "pos"], "data_hash": f"md5-{keys[r]}",
        "params": params,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (folder / "round.json").write_text(json.dumps(info, indent=2))
    log = "step,loss,lr\n" + "".join(f"{s},{1.1 - 0.1 * s:.2f},{5e-5 * s / 5}\n" for s in range(1, 6))
    (folder / "train_log.csv").write_text(log)

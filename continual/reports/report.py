"""The report stage: every round's metrics side by side, as DVC metrics/plots and PNG figures."""
from __future__ import annotations

import csv
import json

from continual.workspace.layout import Workspace


def load_round_metrics(ws: Workspace) -> list[dict]:
    return [json.loads((ws.round_dir(k) / "metrics.json").read_text())
            for k in ws.stream() if (ws.round_dir(k) / "metrics.json").exists()]


def write_report(ws: Workspace) -> dict:
    from continual.reports.plots import plot_accuracy_matrix, plot_curves

    rounds = load_round_metrics(ws)
    out = ws.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "accuracy_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["after_round", "evaluated_on", "accuracy"])
        for r in rounds:
            for key, acc in zip(r["arrivals"], r["accuracy_matrix"][-1]):
                writer.writerow([r["key"], key, f"{acc:.4f}"])
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", "avg_acc", "forgetting_avg", "forgetting_max", "bwt"])
        for r in rounds:
            writer.writerow([r["round"], *(f"{r[k]:.4f}" for k in ("avg_acc", "forgetting_avg", "forgetting_max", "bwt"))])
    last = rounds[-1] if rounds else None
    summary = {"rounds": len(rounds)}
    if last:
        summary.update({k: last[k] for k in ("avg_acc", "forgetting_avg", "forgetting_max", "bwt")})
        summary["strategy"] = last["strategy"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_accuracy_matrix(last["accuracy_matrix"] if last else [], last["arrivals"] if last else [],
                         out / "accuracy_matrix.png")
    plot_curves(rounds, out / "curves.png")
    return summary


def format_matrix(matrix: list[list[float]], keys: list[str]) -> str:
    width = max(len("after " + k) for k in keys)
    lines = [" " * width + " | " + " ".join(f"{k[:9]:>9}" for k in keys)]
    for key, row in zip(keys, matrix):
        lines.append(f"{'after ' + key:<{width}} | " + " ".join(f"{a:9.3f}" for a in row))
    return "\n".join(lines)


def format_rounds(rounds: list[dict]) -> str:
    header = f"{'round':<18} {'strategy':<11} {'rows':>6} {'trained':>8} {'avg_acc':>8} {'forget':>7} {'max_fgt':>7} {'bwt':>7} {'before':>7} {'time_s':>7}"
    lines = [header]
    for r in rounds:
        before = "-" if r["acc_before_update"] is None else f"{r['acc_before_update']:.3f}"
        lines.append(f"{r['key']:<18} {r['strategy']:<11} {r['train_rows']:>6} {r['examples']:>8} {r['avg_acc']:>8.3f} "
                     f"{r['forgetting_avg']:>7.3f} {r['forgetting_max']:>7.3f} {r['bwt']:>7.3f} {before:>7} "
                     f"{r['wall_seconds']:>7.1f}")
    return "\n".join(lines)

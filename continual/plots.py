"""The figures people would rather look at than read: accuracy-matrix heatmap, forgetting curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_accuracy_matrix(matrix: list[list[float]], keys: list[str], path: Path) -> Path:
    n = len(keys)
    grid = [[row[j] if j < len(row) else float("nan") for j in range(n)] for row in matrix]
    fig, ax = plt.subplots(figsize=(1.2 * n + 3, 1.0 * n + 2))
    image = ax.imshow(grid or [[float("nan")]], vmin=0, vmax=1, cmap="viridis")
    for r, row in enumerate(matrix):
        for j, acc in enumerate(row):
            ax.text(j, r, f"{acc:.2f}", ha="center", va="center", color="white" if acc < 0.6 else "black")
    ax.set_xticks(range(n), keys, rotation=30, ha="right")
    ax.set_yticks(range(n), [f"after {k}" for k in keys])
    ax.set_xlabel("evaluated on arrival")
    ax.set_title("Accuracy matrix")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(rounds: list[dict], path: Path, label: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [r["round"] for r in rounds]
    for key, style in (("avg_acc", "o-"), ("forgetting_avg", "s--"), ("forgetting_max", "^:"), ("bwt", "d-.")):
        ax.plot(x, [r[key] for r in rounds], style, label=f"{label} {key}".strip())
    ax.set_xlabel("round")
    ax.set_xticks(x)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_title("Accuracy and forgetting over rounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The figures people would rather look at than read: accuracy-matrix heatmap, confusion matrix, curves.

Built on matplotlib's Figure (no pyplot state), so they are safe to draw anywhere, MLflow logging included.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_matrix(grid: list[list[float | None]], columns: list[str], rows: list[str], title: str,
                vmax: float | None, path: Path) -> Path:
    """A heatmap with each cell's value written in it; ``None`` cells stay blank."""
    values = np.array([[np.nan if v is None else v for v in row] for row in grid] or [[np.nan]], dtype=float)
    fig = Figure(figsize=(2 + 1.1 * max(len(columns), 1), 1.5 + 0.8 * max(len(rows), 1)))
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0, vmax=vmax, cmap="viridis")
    top = vmax if vmax is not None else (np.nanmax(values) if np.isfinite(values).any() else 1.0)
    for (r, c), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(c, r, f"{v:.2f}" if vmax == 1.0 else f"{v:g}", ha="center", va="center",
                    color="black" if v > 0.6 * top else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def plot_accuracy_matrix(matrix: list[list[float]], keys: list[str], path: Path) -> Path:
    grid = [[row[j] if j < len(row) else None for j in range(len(keys))] for row in matrix]
    return plot_matrix(grid, keys, [f"after {k}" for k in keys[: len(grid)]],
                       "accuracy matrix (row: after round, column: evaluated on)", 1.0, path)


def plot_curves(rounds: list[dict], path: Path) -> Path:
    """Average accuracy, average and maximum forgetting, and BWT against round."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    x = [r["round"] for r in rounds]
    for key, style in (("avg_acc", "o-"), ("forgetting_avg", "s--"), ("forgetting_max", "^:"), ("bwt", "d-.")):
        ax.plot(x, [r[key] for r in rounds], style, label=key)
    ax.set_xlabel("round")
    ax.set_xticks(x)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_title("accuracy and forgetting over rounds")
    ax.legend()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def plot_two_panels(path: Path, left: tuple[str, str], right: tuple[str, str], draw: Callable,
                    note: str | None = None) -> Path:
    """Two charts side by side against round; ``left``/``right`` are (title, y label) and ``draw(left_axes,
    right_axes)`` plots the lines (the left chart's labels make the legend)."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    draw(*axes)
    for ax, (title, ylabel) in zip(axes, (left, right)):
        ax.set(title=title, xlabel="round", ylabel=ylabel)
    axes[0].legend(fontsize="small")
    if note:
        fig.suptitle(note, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

"""The figures people would rather look at than read: accuracy-matrix heatmap, confusion matrix, curves.

Built on matplotlib's Figure (no pyplot state), so they are safe to draw anywhere, MLflow logging included.
A heatmap grows with its rows and columns up to MAX_INCHES and no further, writes its values into a few hundred
cells at most, and the confusion matrix shows only the most confused classes: memory and time stay bounded
whatever the number of classes or rounds (sized per cell, 1,000 classes would need a 99,000 x 72,000 px canvas).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

MAX_INCHES = (16.0, 12.0)  # a heatmap's largest figure (width, height): 1440 x 1080 pixels at 90 dpi
WRITTEN_CELLS = 484  # up to 22 x 22 cells each show their value; beyond, only the colour and the colour bar
MAX_TICKS = 50  # tick labels per axis; more rows or columns: every k-th is named
TICK_CHARS = 30  # a longer label is cut, so that labels cannot widen the picture either
CONFUSION_CLASSES = 20  # tracking.confusion_classes when params.yaml has none


def plot_matrix(grid: list[list[float | None]], columns: list[str], rows: list[str], title: str,
                vmax: float | None, path: Path, fmt: str | None = None) -> Path:
    """A heatmap with each cell's value written in it (``fmt``; default: 2 decimals when ``vmax`` is 1, else
    as short as it goes); ``None`` cells stay blank; a cell over ``vmax`` takes the top colour."""
    values = np.array([[np.nan if v is None else v for v in row] for row in grid] or [[np.nan]], dtype=float)
    width, height = 2 + 1.1 * max(len(columns), 1), 1.5 + 0.8 * max(len(rows), 1)
    fig = Figure(figsize=(min(width, MAX_INCHES[0]), min(height, MAX_INCHES[1])))
    ax = fig.subplots()
    capped = width > MAX_INCHES[0] or height > MAX_INCHES[1]
    image = ax.imshow(values, vmin=0, vmax=vmax, cmap="viridis", aspect="auto" if capped else "equal",
                      interpolation="nearest")
    top = vmax if vmax is not None else (np.nanmax(values) if np.isfinite(values).any() else 1.0)
    if values.size <= WRITTEN_CELLS:
        for (r, c), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(c, r, format(v, fmt or (".2f" if vmax == 1.0 else "g")), ha="center", va="center",
                        color="black" if v > 0.6 * top else "white")
    ticks = _ticks(columns)
    ax.set_xticks(*ticks, rotation=30 if len(ticks[0]) <= 20 else 90, ha="right")  # many: upright, no overlap
    ax.set_yticks(*_ticks(rows))
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def _ticks(names: list[str]) -> tuple[list[int], list[str]]:
    """Positions and (cut) labels of at most MAX_TICKS ticks, evenly spread."""
    step = max(1, -(-len(names) // MAX_TICKS))
    cut = [name if len(name) <= TICK_CHARS else name[: TICK_CHARS - 1] + "\u2026" for name in names]
    return list(range(0, len(names), step)), cut[::step]


def most_confused(matrix: list[list[int]], labels: list[str], keep: int) -> tuple[list[list[int]], list[str]]:
    """The confusion matrix cut to the ``keep`` classes with the most errors (as the true class plus as the
    prediction), in label order, and one row and column "other (N)" summing the rest; as it is when it has
    no more than ``keep`` classes. Every count stays in the table, so the rows still sum to the test rows."""
    if len(labels) <= keep:
        return matrix, labels
    m = np.asarray(matrix, dtype=np.int64)
    errors = m.sum(0) + m.sum(1) - 2 * np.diag(m)
    chosen = np.sort(np.argsort(-errors, kind="stable")[:keep])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    cut = np.zeros((keep + 1, keep + 1), dtype=np.int64)
    cut[:keep, :keep] = m[np.ix_(chosen, chosen)]
    cut[:keep, keep] = m[np.ix_(chosen, rest)].sum(1)
    cut[keep, :keep] = m[np.ix_(rest, chosen)].sum(0)
    cut[keep, keep] = m[np.ix_(rest, rest)].sum()
    return cut.tolist(), [labels[i] for i in chosen] + [f"other ({len(rest)})"]


def plot_confusion(matrix: list[list[int]], labels: list[str], title: str, path: Path,
                   keep: int = CONFUSION_CLASSES) -> Path:
    """The confusion matrix heatmap (row: true, column: predicted) of the ``keep`` most confused classes."""
    keep = max(1, keep)
    shown, names = most_confused(matrix, labels, keep)
    vmax = None
    if len(names) < len(labels):
        title += f"\nthe {keep} most confused of {len(labels)} classes; the other {len(labels) - keep} summed"
        # The "other" corner would dwarf every other cell: it takes the top colour and keeps its number.
        vmax = max(1, *(v for r, row in enumerate(shown) for c, v in enumerate(row) if (r, c) != (keep, keep)))
    return plot_matrix(shown, names, names, title, vmax, path, fmt="g")


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
    ax.set_xticks(x[:: max(1, -(-len(x) // MAX_TICKS))])
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

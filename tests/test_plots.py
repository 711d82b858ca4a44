"""The figures stay a bounded size whatever the number of classes or rounds, and a cut confusion matrix keeps
every count."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from matplotlib.image import imread

from continual.reports.plots import MAX_INCHES, most_confused, plot_confusion

DPI = 90
MAX_PIXELS = (MAX_INCHES[0] * DPI * 1.25, MAX_INCHES[1] * DPI * 1.25)  # bbox_inches="tight" adds a margin at most


def confusion_of(n: int, seed: int = 0) -> tuple[list[list[int]], list[str]]:
    rng = np.random.default_rng(seed)
    matrix = np.diag(rng.integers(5, 20, n))
    np.add.at(matrix, (rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)), 1)  # scattered errors
    return matrix.tolist(), [f"class {i} with a rather long descriptive name" for i in range(n)]


def test_most_confused_keeps_the_worst_classes_and_sums_the_rest():
    matrix = [[5, 0, 0, 0], [0, 3, 4, 0], [0, 2, 6, 0], [1, 0, 0, 9]]
    shown, names = most_confused(matrix, ["a", "b", "c", "d"], 2)
    assert names == ["b", "c", "other (2)"]
    assert shown == [[3, 4, 0], [2, 6, 0], [0, 0, 15]]
    assert np.sum(shown) == np.sum(matrix)
    assert most_confused(matrix, ["a", "b", "c", "d"], 4) == (matrix, ["a", "b", "c", "d"])


def test_the_confusion_figure_takes_any_number_of_classes_to_keep(tmp_path):
    matrix, labels = confusion_of(30)
    for keep in (0, 1, 5):
        plot_confusion(matrix, labels, "confusion", tmp_path / f"{keep}.png", keep)
        assert imread(tmp_path / f"{keep}.png").shape[0] > 100  # keep 0 draws one class: 0 would leave no cell


def test_a_small_confusion_matrix_is_drawn_whole(tmp_path):
    matrix, labels = confusion_of(5)
    path = plot_confusion(matrix, labels, "confusion", tmp_path / "c.png")
    height, width = imread(path).shape[:2]
    assert width < 900 and height < 800  # sized by its 5 classes, not by the cap


DRAW = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from continual.reports.plots import plot_accuracy_matrix, plot_confusion, plot_curves
n, out = int(sys.argv[1]), Path(sys.argv[2])
rng = np.random.default_rng(0)
matrix = np.diag(rng.integers(5, 20, n))
np.add.at(matrix, (rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)), 1)
labels = [f"class {i} with a rather long descriptive name" for i in range(n)]
keys = [f"{i + 1:04d}-arrival-{i}" for i in range(n)]
accuracy = [[0.5 + 0.4 * ((i * j) % 7) / 7 for j in range(i + 1)] for i in range(n)]
rounds = [{"round": i + 1, "avg_acc": 0.8, "forgetting_avg": 0.1, "forgetting_max": 0.2, "bwt": -0.1} for i in range(n)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
plot_confusion(matrix.tolist(), labels, "confusion", out / "confusion.png")
plot_accuracy_matrix(accuracy, keys, out / "accuracy.png")
plot_curves(rounds, out / "curves.png")
print(json.dumps({"seconds": time.perf_counter() - start, "rss_before_kb": before,
                  "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_figures_for_1000_classes_and_rounds_take_bounded_pixels_memory_and_time(tmp_path):
    # In a fresh process, so that ru_maxrss is this drawing's peak and not the test session's.
    done = subprocess.run([sys.executable, "-c", DRAW, "1000", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.splitlines()[-1])
    for name in ("confusion.png", "accuracy.png", "curves.png"):
        height, width = imread(tmp_path / name).shape[:2]
        assert width <= MAX_PIXELS[0] and height <= MAX_PIXELS[1], (name, width, height)
    assert measured["rss_peak_kb"] - measured["rss_before_kb"] < 400 * 1024, measured  # the old code: > 24 GB
    assert measured["seconds"] < 60, measured  # a million cells written in would take many minutes

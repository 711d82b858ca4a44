"""Accuracy-matrix arithmetic. ``matrix[r][j]`` is accuracy on arrival j after round r (j <= r).

Definitions follow Chaudhry et al. (2018) for forgetting and Lopez-Paz & Ranzato (2017) for BWT.
"""
from __future__ import annotations


def average_accuracy(matrix: list[list[float]]) -> float:
    """Mean accuracy over every arrival seen so far, after the last round."""
    last = matrix[-1]
    return sum(last) / len(last)


def forgetting(matrix: list[list[float]]) -> dict[int, float]:
    """Per earlier arrival j: best accuracy it ever had before the last round, minus its accuracy now."""
    last = len(matrix) - 1
    return {j: max(matrix[r][j] for r in range(j, last)) - matrix[last][j] for j in range(last)}


def backward_transfer(matrix: list[list[float]]) -> float:
    """Mean over earlier arrivals of (accuracy now - accuracy right after learning it); negative = forgot."""
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    return sum(matrix[last][j] - matrix[j][j] for j in range(last)) / last


def summarise(matrix: list[list[float]], keys: list[str]) -> dict:
    """The round's headline figures, keyed by arrival where they are per arrival."""
    per_arrival = forgetting(matrix)
    values = list(per_arrival.values())
    return {
        "acc": dict(zip(keys, matrix[-1])),
        "avg_acc": average_accuracy(matrix),
        "forgetting": {keys[j]: f for j, f in per_arrival.items()},
        "forgetting_avg": sum(values) / len(values) if values else 0.0,
        "forgetting_max": max(values) if values else 0.0,
        "bwt": backward_transfer(matrix),
    }

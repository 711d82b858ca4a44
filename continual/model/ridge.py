"""The closed-form ridge head: its solution from running sums, and λ chosen from the sums alone.

Every ridge head of a round (the ``ridge`` strategy, the frozen rounds of ``adapt``, a fine-tuning round's head
refit) keeps XᵀX and XᵀY over its rows, with features that end in a constant 1 (``with_bias``), and solves
W = (XᵀX + λI)⁻¹ XᵀY (``solve_head``). New classes arrive as new columns of the sums (``padded``).

λ comes from the sums alone (XᵀX, XᵀY and the row count), no stored rows: ``strategy.ridge.lambda: auto``
picks, over a log grid, the λ of least generalised cross-validation error (Golub, Heath and Wahba 1979),
RSS(λ) / (n − df(λ))² with df(λ) = Σᵢ sᵢ/(sᵢ+λ). From the eigendecomposition G = V diag(s) Vᵀ of the Gram
matrix and C = Vᵀ XᵀY, each λ costs O(d·K):

    RSS(λ) = ΣY² − Σᵢₖ cᵢₖ² (sᵢ + 2λ) / (sᵢ + λ)²

With fewer rows than dimensions GCV degenerates on its own (RSS and n − df both go to 0 as λ → 0, and it
picks the smallest λ), so a λ is only eligible while the fit spends at most a quarter of the rows on degrees
of freedom, df(λ) ≤ n/4: a floor that follows the row count and never binds once rows are plentiful. The
Bayesian evidence (``evidence``, MacKay 1992: K/2·Σᵢ log(λ/(sᵢ+λ)) − nK/2·log(ΣY² − Σᵢₖ cᵢₖ²/(sᵢ+λ))) is kept
beside it: under the same floor it chose the same λ or a worse one on every stream measured
(docs/benchmarks.md, "λ from the sums"). One-hot targets, or class-balanced weights that sum to n, make ΣY²
the bias entry of the Gram matrix.
"""
from __future__ import annotations

import torch

GRID = torch.logspace(-3, 4, 29, dtype=torch.float64)  # 0.001 .. 10,000, four points a decade
CRITERIA = ("gcv", "evidence")
MAX_DF_SHARE = 0.25  # eligible λ: degrees of freedom at most this share of the rows


def padded(old: torch.Tensor | None, rows: int, columns: int) -> torch.Tensor:
    """A running sum padded with zeros to [rows x columns] (new classes arrive as new columns)."""
    grown = torch.zeros(rows, columns, dtype=torch.float64)
    if old is not None:
        grown[: old.shape[0], : old.shape[1]] = old
    return grown


def with_bias(features: torch.Tensor) -> torch.Tensor:
    """Features with a constant 1 appended: its row of the solution is the bias."""
    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)


def solve_head(gram: torch.Tensor, xty: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [classes x features], bias [classes]) of the ridge solution (XᵀX + λI)⁻¹ XᵀY, X with bias column."""
    solved = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), xty)
    return solved[:-1].T, solved[-1]


def parse_lambda(value) -> float | None:
    """``strategy.ridge.lambda``: a positive number fixes λ; ``auto`` (None) chooses it each round."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    lam = float(value)
    if not lam > 0:
        raise ValueError(f"strategy.ridge.lambda must be 'auto' or a positive number, not {value!r}")
    return lam


def scores(gram: torch.Tensor, xty: torch.Tensor, criterion: str = "gcv", grid: torch.Tensor = GRID,
           floor: bool = True) -> torch.Tensor:
    """The criterion at each λ of ``grid`` (higher is better), for features whose last column is the constant 1;
    with ``floor``, -inf where λ is not eligible (df(λ) > n/4)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    gram, xty = gram.double(), xty.double()
    n = float(gram[-1, -1])  # the bias column's sum of squares: the (weighted) row count, and ΣY² for one-hot Y
    s, v = torch.linalg.eigh(gram)
    s = s.clamp(min=0.0)
    c2 = ((v.T @ xty) ** 2).sum(dim=1)  # Σₖ cᵢₖ²
    k = xty.shape[1]
    lam = grid.unsqueeze(1)  # [grid, 1] against s [d]
    df = (s / (s + lam)).sum(dim=1)
    if criterion == "gcv":
        rss = (n - (c2 * (s + 2 * lam) / (s + lam) ** 2).sum(dim=1)).clamp(min=1e-12)
        score = -rss / (n - df).clamp(min=1e-9) ** 2
    else:
        energy = (n - (c2 / (s + lam)).sum(dim=1)).clamp(min=1e-12)
        score = 0.5 * k * torch.log(lam / (s + lam)).sum(dim=1) - 0.5 * n * k * torch.log(energy)
    if not floor:
        return score
    eligible = df <= MAX_DF_SHARE * n
    eligible[-1] = eligible[-1] or not bool(eligible.any())  # nothing eligible: the largest λ
    return torch.where(eligible, score, torch.tensor(-torch.inf, dtype=score.dtype))


def choose_lambda(gram: torch.Tensor, xty: torch.Tensor, criterion: str = "gcv", grid: torch.Tensor = GRID,
                  floor: bool = True) -> float:
    """The λ of ``grid`` that the criterion prefers for these sums."""
    return float(grid[int(torch.argmax(scores(gram, xty, criterion, grid, floor)))])

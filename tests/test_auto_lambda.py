"""λ chosen from the running sums: GCV and the evidence against their definitions on the rows, against
scikit-learn's RidgeCV, and as a round metric."""
import json
import math

import numpy as np
import pytest
import torch

from continual.model.ridge import GRID, choose_lambda, parse_lambda, scores, solve_head, with_bias
from helpers import build_stream, run_stream, tiny_params


def sums(x: torch.Tensor, targets: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xb = with_bias(x.double())
    return xb.T @ xb, xb.T @ torch.nn.functional.one_hot(targets, classes).double()


def log_marginal(x: torch.Tensor, y: torch.Tensor, lam: float) -> float:
    """log p(Y | λ) straight from its definition: each column y ~ N(0, σ²(I + XXᵀ/λ)), σ² at its maximum."""
    n, k = y.shape
    cov = torch.eye(n, dtype=torch.float64) + x @ x.T / lam
    sign, logdet = torch.linalg.slogdet(cov)
    quad = float(sum(y[:, j] @ torch.linalg.solve(cov, y[:, j]) for j in range(k)))
    sigma2 = quad / (n * k)
    return -0.5 * k * float(logdet) - 0.5 * n * k * math.log(sigma2)


@pytest.mark.parametrize("rows", [20, 200])  # fewer and more rows than the 31 dimensions (30 + bias)
def test_evidence_from_the_sums_equals_the_marginal_likelihood_from_the_rows(rows):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 30, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (rows,), generator=generator)
    gram, xty = sums(x, targets, 3)
    grid = torch.tensor([0.01, 0.3, 1.0, 10.0, 300.0], dtype=torch.float64)
    ours = scores(gram, xty, "evidence", grid, floor=False)
    xb, y = with_bias(x), torch.nn.functional.one_hot(targets, 3).double()
    direct = torch.tensor([log_marginal(xb, y, float(lam)) for lam in grid], dtype=torch.float64)
    # equal up to a constant that does not depend on λ
    assert torch.allclose(ours - ours[0], direct - direct[0], atol=1e-6), (ours - ours[0], direct - direct[0])


@pytest.mark.parametrize("rows", [20, 200])
def test_gcv_from_the_sums_equals_gcv_from_the_rows(rows):
    generator = torch.Generator().manual_seed(rows + 1)
    x = torch.randn(rows, 30, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (rows,), generator=generator)
    gram, xty = sums(x, targets, 3)
    grid = torch.tensor([0.01, 0.3, 1.0, 10.0, 300.0], dtype=torch.float64)
    xb, y = with_bias(x), torch.nn.functional.one_hot(targets, 3).double()
    direct = []
    for lam in grid:
        hat = xb @ torch.linalg.solve(xb.T @ xb + lam * torch.eye(31, dtype=torch.float64), xb.T)
        rss = float(((y - hat @ y) ** 2).sum())
        direct.append(-rss / (rows - float(torch.trace(hat))) ** 2)
    assert torch.allclose(scores(gram, xty, "gcv", grid, floor=False), torch.tensor(direct, dtype=torch.float64), rtol=1e-6)


def blobs(rows: int, dims: int, classes: int, seed: int, spread: float = 2.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * spread / math.sqrt(dims)
    labels = rng.integers(0, classes, size=rows)
    return centres[labels] + rng.normal(size=(rows, dims)) / math.sqrt(dims) * 2.0, labels


@pytest.mark.parametrize("rows,dims", [(600, 64), (60, 200)])
def test_auto_lambda_is_as_good_as_ridgecv_on_the_same_rows(rows, dims):
    from sklearn.linear_model import RidgeCV

    x, y = blobs(rows, dims, 5, seed=dims)
    x_test, y_test = blobs(2000, dims, 5, seed=dims)  # same centres (same seed), fresh noise
    x_test, y_test = x_test[:2000], y_test[:2000]
    onehot = np.eye(5)[y]
    xb = np.hstack([x, np.ones((rows, 1))])
    cv = RidgeCV(alphas=GRID.numpy(), fit_intercept=False).fit(xb, onehot)  # exact leave-one-out over the rows
    gram, xty = sums(torch.from_numpy(x), torch.from_numpy(y), 5)
    ours = choose_lambda(gram, xty)
    weight, bias = solve_head(gram, xty, ours)
    acc_ours = float(((torch.from_numpy(x_test) @ weight.T + bias).argmax(1).numpy() == y_test).mean())
    acc_cv = float((np.hstack([x_test, np.ones((len(x_test), 1))]) @ cv.coef_.T).argmax(1).__eq__(y_test).mean())
    assert acc_ours >= acc_cv - 0.02, (ours, cv.alpha_, acc_ours, acc_cv)
    assert GRID[0] < ours < GRID[-1]  # an interior choice, also with fewer rows than dimensions
    df = float(sum(s / (s + ours) for s in torch.linalg.eigvalsh(gram).clamp(min=0)))
    assert df <= rows / 4 + 1e-9  # the floor: at most a quarter of the rows spent on degrees of freedom
    assert abs(math.log10(ours) - math.log10(cv.alpha_)) <= 1.5, (ours, cv.alpha_)


def test_lambda_param_is_auto_or_a_positive_number():
    assert parse_lambda("auto") is None and parse_lambda("AUTO ") is None
    assert parse_lambda(10) == 10.0 and parse_lambda("0.5") == 0.5
    for bad in (0, -1, "ten"):
        with pytest.raises(ValueError):
            parse_lambda(bad)


def test_a_ridge_round_records_the_lambda_it_chose(tiny_model_dir, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=10, n_test=4)
    params = tiny_params(tiny_model_dir, "ridge")
    assert params["strategy"]["ridge"]["lambda"] == "auto"  # the shipped default
    metrics = run_stream(ws, params)
    chosen = [m["ridge_lambda"] for m in metrics]
    assert all(float(GRID[0]) <= lam <= float(GRID[-1]) for lam in chosen)
    flat = json.loads(ws.round_metrics_file(ws.stream()[-1]).read_text())
    assert flat["ridge_lambda"] == chosen[-1]  # DVC metrics
    params["strategy"]["ridge"]["lambda"] = 3.0
    fixed = run_stream(build_stream(tmp_path / "ws2", [["a", "b"]], n_train=10, n_test=4), params)
    assert fixed[0]["ridge_lambda"] == 3.0

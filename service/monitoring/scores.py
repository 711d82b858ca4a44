"""Drift statistics of a window of served texts against a champion's reference.

- ``embedding_auc``: a domain classifier (logistic regression, scikit-learn) learns to tell window embeddings from
  reference embeddings; its cross-validated ROC AUC is the score. 0.5: indistinguishable. This is Evidently's
  ``model`` method for embedding drift, with its threshold of 0.55. Evidently itself is not a dependency: it
  brings 24 packages (a web framework, nltk, statsmodels, plotly) into the model server, and its reports are
  built for batch DataFrames, not a check every 30 s beside live traffic (README, "Monitoring").
- ``label_psi``: population stability index of the predicted labels, window against the reference's held-out rows.
- ``length_psi``: the same on text lengths, binned at the reference's deciles (in characters).
- ``confidence_drop``: mean largest softmax probability on the reference's held-out rows minus the window's.
"""
from __future__ import annotations

import numpy as np

from service.monitoring.reference import Reference

CHECKS = ("embedding_auc", "label_psi", "length_psi", "confidence_drop")
PSI_FLOOR = 1e-4  # a share of 0 in either sample would make PSI infinite


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms (counts over the same bins)."""
    e = np.clip(expected / max(expected.sum(), 1), PSI_FLOOR, None)
    a = np.clip(actual / max(actual.sum(), 1), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def length_psi(reference_lengths: np.ndarray, lengths: np.ndarray) -> float:
    edges = np.unique(np.quantile(reference_lengths, np.linspace(0, 1, 11)[1:-1]))
    bins = len(edges) + 1
    return psi(np.bincount(np.searchsorted(edges, reference_lengths, side="right"), minlength=bins),
               np.bincount(np.searchsorted(edges, lengths, side="right"), minlength=bins))


def prepare() -> None:
    """Import what the checks use (about a second for scikit-learn), so that the first check does not."""
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401


def domain_auc(reference: np.ndarray, window: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC AUC of a classifier telling ``window`` rows from ``reference`` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    x = np.vstack([reference, window]).astype(np.float32)
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    folds = min(folds, len(reference), len(window))
    with threadpool_limits(1):  # one core: the request threads keep the rest
        scores = cross_val_predict(LogisticRegression(max_iter=300), x, y, method="decision_function",
                                   cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(roc_auc_score(y, scores))


def drift_scores(reference: Reference | None, embeddings: np.ndarray | None, predicted: np.ndarray,
                 confidence: np.ndarray, lengths: np.ndarray, backend: str = "torch") -> dict[str, float | None]:
    """Every check's score; None where the reference or the backend lacks what it needs. ``backend`` made the
    window's embeddings: the reference's own of that kind are compared (int8 or fp32)."""
    scores: dict[str, float | None] = dict.fromkeys(CHECKS)
    if reference is None:
        return scores
    if len(reference.lengths):
        scores["length_psi"] = length_psi(reference.lengths, lengths)
    if len(reference.heldout_predicted):
        width = len(reference.labels)
        scores["label_psi"] = psi(np.bincount(reference.heldout_predicted, minlength=width),
                                  np.bincount(predicted, minlength=width))
        scores["confidence_drop"] = float(reference.heldout_confidence.mean() - confidence.mean())
    expected = reference.embeddings_for(backend)
    if embeddings is not None and len(expected) >= 2 and embeddings.shape[1] == expected.shape[1]:
        scores["embedding_auc"] = domain_auc(expected, embeddings)
    return scores

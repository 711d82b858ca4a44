"""Accuracy of a classifier on rows of text, batched with dynamic padding."""
from __future__ import annotations

import torch

from continual.model.encoder import forward_sorted


def predict_proba(model, tokenizer, texts: list[str], batch_size: int, desc: str = "predict") -> torch.Tensor:
    """Softmax probabilities [texts x labels], as the server and the MLflow pyfunc compute them."""
    return forward_sorted(model, tokenizer, texts, batch_size,
                          lambda ids, mask: torch.softmax(model(ids, mask).float(), dim=-1), desc)


def accuracy(model, tokenizer, rows: list[dict], batch_size: int, desc: str = "evaluate") -> tuple[float, list[int]]:
    """Accuracy on ``rows`` (a label the model does not know counts as wrong) and the predicted label ids."""
    label2id = model.label2id
    predictions = predict_proba(model, tokenizer, [r["text"] for r in rows], batch_size, desc).argmax(-1).tolist()
    correct = sum(p == label2id.get(r["label"], -1) for p, r in zip(predictions, rows))
    return correct / len(rows), predictions


def confusion(rows: list[dict], predictions: list[int], labels: list[str]) -> dict:
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for row, p in zip(rows, predictions):
        matrix[index[row["label"]]][p] += 1
    return {"labels": labels, "matrix": matrix}

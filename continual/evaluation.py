"""Accuracy of a classifier on rows of text, batched with dynamic padding."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence


@torch.inference_mode()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> list[int]:
    """Predicted label ids. Texts are sorted by length so each batch pads little."""
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    predictions = [0] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids = pad_sequence([torch.tensor(encoded[i]) for i in idx], batch_first=True,
                           padding_value=tokenizer.pad_token_id).to(device)
        logits = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long()).logits
        for i, p in zip(idx, logits.argmax(-1).tolist()):
            predictions[i] = p
    return predictions


def accuracy(model, tokenizer, rows: list[dict], max_length: int, batch_size: int) -> tuple[float, list[int]]:
    """Accuracy on ``rows`` (a label the model does not know counts as wrong) and the predictions."""
    label2id = model.config.label2id
    predictions = predict(model, tokenizer, [r["text"] for r in rows], max_length, batch_size)
    correct = sum(p == label2id.get(r["label"], -1) for p, r in zip(predictions, rows))
    return correct / len(rows), predictions


def confusion(rows: list[dict], predictions: list[int], labels: list[str]) -> dict:
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for row, p in zip(rows, predictions):
        matrix[index[row["label"]]][p] += 1
    return {"labels": labels, "matrix": matrix}

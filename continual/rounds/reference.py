"""The reference a round stores with its model for the server's drift monitor (``service.monitoring.reference``).

Embeddings and confidences come from held-out rows: the model never trained on them, so they look like
traffic from the same domains. Rows trained on sit closer to their class after fine-tuning, and a domain
classifier would tell them from fresh traffic of the very same domain.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from continual.rounds.metrics import forgetting
from continual.model.encoder import forward_sorted
from service.monitoring.reference import Reference
from service.pooled import PooledClassifier


def build_reference(model: PooledClassifier, tokenizer, train_rows: list[dict], tests: dict[str, list[dict]],
                    matrix: list[list[float]], rows: int, seed: int, batch_size: int) -> tuple[Reference, list[str]]:
    """A sample of at most ``rows`` held-out rows of every arrival in ``tests`` (in stream order), embedded and
    classified by ``model``; label counts of ``train_rows``; text lengths of both. Also returns the sampled held-out
    texts, for ``with_int8_embeddings``."""
    rng = random.Random(seed)
    heldout = [row for arrival in tests.values() for row in arrival]
    heldout = rng.sample(heldout, min(rows, len(heldout)))
    width = model.embedding_dim

    def embed_and_classify(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embedding = model.embed(ids, mask)
        return torch.cat([embedding, torch.softmax(model.head(model.features(embedding)).float(), -1)], dim=1)

    with torch.no_grad():
        out = forward_sorted(model, tokenizer, [r["text"] for r in heldout], batch_size, embed_and_classify,
                             "reference: held-out rows")
    out = out.float().numpy() if len(heldout) else np.zeros((0, width + len(model.labels)), np.float32)
    probabilities = out[:, width:]
    label_ids = model.label2id
    counts = np.bincount([label_ids[r["label"]] for r in train_rows], minlength=len(model.labels))
    texts = [r["text"] for r in rng.sample(train_rows, min(rows, len(train_rows)))] + [r["text"] for r in heldout]
    arrivals = list(tests)
    square = np.full((len(matrix), len(matrix)), np.nan, dtype=np.float32)
    for i, row in enumerate(matrix):
        square[i, :len(row)] = row
    per_round = [np.mean(list(forgetting(matrix[:i + 1]).values())) if i else 0.0 for i in range(len(matrix))]
    return Reference(labels=list(model.labels), train_label_counts=counts, embeddings=out[:, :width],
                     lengths=np.array([len(t) for t in texts], dtype=np.int32),
                     heldout_confidence=probabilities.max(axis=1) if len(heldout) else np.zeros(0, np.float32),
                     heldout_predicted=probabilities.argmax(axis=1) if len(heldout) else np.zeros(0, np.int64),
                     arrivals=arrivals, accuracy_matrix=square, forgetting=np.array(per_round, dtype=np.float32)
                     ), [r["text"] for r in heldout]


@dataclass
class PendingReference:
    """A reference and the held-out texts it sampled, until the export's int8 graph has embedded them too."""

    reference: Reference
    texts: list[str]
    batch_size: int

    def add_int8(self, served_int8) -> None:
        """Add the held-out texts as the int8 graph (``served_int8``: the export's check) embeds them."""
        predictions = served_int8.predict(self.texts, self.batch_size)
        if predictions and predictions[0].embedding is not None:
            self.reference = replace(self.reference, embeddings_int8=np.stack([p.embedding for p in predictions]))


def write_reference(model: PooledClassifier, tokenizer, model_dir: Path, train_rows: list[dict],
                    tests: dict[str, list[dict]], matrix: list[list[float]], rows: int = 1000, seed: int = 0,
                    batch_size: int = 32) -> Reference:
    """``build_reference`` for a model folder exported outside a round (benchmarks, tests), with the int8 graph's
    embeddings when the folder has that graph; saved in ``model_dir``."""
    from service.backends import BackendChoice, onnx_file
    from service.model_source import ModelCard

    pending = PendingReference(*build_reference(model, tokenizer, train_rows, tests, matrix, rows, seed, batch_size),
                               batch_size)
    if onnx_file(model_dir, "onnx-int8").is_file():
        from service.backends.onnxrt import OnnxClassifier

        pending.add_int8(OnnxClassifier.load(model_dir, ModelCard(source=str(model_dir), fingerprint="reference"),
                                             model.max_length, BackendChoice("onnx-int8", "reference"), threads=1))
    pending.reference.save(model_dir)
    return pending.reference

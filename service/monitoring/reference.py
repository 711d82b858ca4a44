"""A champion's reference: a compact sample of the data it learned from, which live traffic is compared with.

The round writes it into the model folder (``continual.rounds.reference``), so DVC versions it with the round and MLflow
registers it with the model version; the server reads it with the model. One ``.npz`` of plain arrays (loaded
with ``allow_pickle=False``):

    labels              [L] str      the head's labels, in order
    train_label_counts  [L] int64    training rows per label, over every arrival the model saw
    embeddings          [n, d] fp16  pooled embeddings of a sample of held-out rows (the model never trained on
                                     them, so they look like traffic of the same domains, not like memorised rows)
    lengths             [m] int32    text lengths in characters, a sample of training and held-out rows
    heldout_confidence  [n] fp16     the largest softmax probability on the sampled held-out rows
    heldout_predicted   [n] int16    the label the model predicted for them
    arrivals            [R] str      the lineage's arrivals, in order
    accuracy_matrix     [R, R] fp32  accuracy on arrival j after round i (NaN above the diagonal)
    forgetting          [R] fp32     average forgetting after each round (continual.rounds.metrics)
    embeddings_int8     [n, d] fp16  optional: the same rows embedded by the int8 ONNX graph. Quantization moves every
                                     embedding a little, the same way: a domain classifier tells int8 from fp32
                                     embeddings of one text set (AUC 0.53-0.56 on VADER tweets, docs/benchmarks.md), so
                                     an int8 server compares its traffic with these
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference.npz"
FORMAT = "continual.rounds.reference/1"


@dataclass(frozen=True)
class Reference:
    labels: list[str]
    train_label_counts: np.ndarray
    embeddings: np.ndarray
    lengths: np.ndarray
    heldout_confidence: np.ndarray
    heldout_predicted: np.ndarray
    arrivals: list[str]
    accuracy_matrix: np.ndarray
    forgetting: np.ndarray
    embeddings_int8: np.ndarray | None = None

    def embeddings_for(self, backend: str) -> np.ndarray:
        """The reference embeddings made the way ``backend`` makes the traffic's."""
        return self.embeddings_int8 if backend == "onnx-int8" and self.embeddings_int8 is not None else self.embeddings

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REFERENCE_FILE
        with open(path, "wb") as f:
            np.savez_compressed(
                f, format=np.array(FORMAT), labels=np.array(self.labels, dtype=str),
                train_label_counts=self.train_label_counts.astype(np.int64),
                embeddings=self.embeddings.astype(np.float16), lengths=self.lengths.astype(np.int32),
                heldout_confidence=self.heldout_confidence.astype(np.float16),
                heldout_predicted=self.heldout_predicted.astype(np.int16),
                arrivals=np.array(self.arrivals, dtype=str), accuracy_matrix=self.accuracy_matrix.astype(np.float32),
                forgetting=self.forgetting.astype(np.float32),
                **({} if self.embeddings_int8 is None else {"embeddings_int8": self.embeddings_int8.astype(np.float16)}))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Reference | None":
        """The reference in ``folder``, or None when the model was written without one (before monitoring)."""
        path = Path(folder) / REFERENCE_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise ValueError(f"{path}: format {data['format']!s}, expected {FORMAT}")
            return cls(labels=[str(x) for x in data["labels"]], train_label_counts=data["train_label_counts"],
                       embeddings=data["embeddings"].astype(np.float32), lengths=data["lengths"],
                       heldout_confidence=data["heldout_confidence"].astype(np.float32),
                       heldout_predicted=data["heldout_predicted"].astype(np.int64),
                       arrivals=[str(x) for x in data["arrivals"]], accuracy_matrix=data["accuracy_matrix"],
                       forgetting=data["forgetting"],
                       embeddings_int8=data["embeddings_int8"].astype(np.float32) if "embeddings_int8" in data else None)

    def lineage(self) -> dict:
        """The accuracy matrix of the champion's lineage and its forgetting per round (JSON-ready)."""
        rows = [[float(self.accuracy_matrix[i, j]) for j in range(i + 1)] for i in range(len(self.arrivals))]
        return {"arrivals": list(self.arrivals), "accuracy_matrix": rows,
                "forgetting": [float(x) for x in self.forgetting]}

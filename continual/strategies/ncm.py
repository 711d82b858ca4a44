"""Nearest class mean on the frozen encoder's embeddings: the cosine to each class's mean embedding.

State: per-class sums of embeddings and counts. Head row c = s · μ_c / |μ_c|, bias 0, so argmax of the logits
is the class whose mean is closest in angle (the embeddings are normalised when the encoder was trained so).
"""
from __future__ import annotations

import torch

from continual.strategies.closed_form import ClosedForm


class NCM(ClosedForm):
    name = "ncm"
    state_file = "ncm.safetensors"

    def __init__(self, params: dict):
        super().__init__(params)
        self.scale = float(params["strategy"]["ncm"]["logit_scale"])

    def fit(self, model, features: torch.Tensor, targets: torch.Tensor) -> None:
        classes = len(model.labels)
        sums = self._grown("sums", classes, features.shape[1])
        counts = self._grown("counts", classes, 1)
        sums.index_add_(0, targets, features)
        counts.index_add_(0, targets, torch.ones(len(targets), 1, dtype=torch.float64))
        self.sums = {"sums": sums, "counts": counts}
        means = sums / counts.clamp(min=1)
        self.set_head(model, self.scale * torch.nn.functional.normalize(means, dim=1), torch.zeros(classes))

"""A ridge-regression head on the frozen encoder, solved from running sums (Gram matrix XᵀX and XᵀY).

The sums over every arrival so far give exactly the head that joint training on frozen features would
solve: the encoder forgets nothing and no text is kept (an old class may still lose accuracy when new classes
arrive, exactly as it would under joint training on the same features). With ``projection_dim`` > 0 the embeddings first go
through a fixed random projection and a ReLU (RanPAC, McDonnell et al., NeurIPS 2023), which makes the
classes more linearly separable; the projection is drawn once from the seed and stored with the sums.

Head: W = (XᵀX + λI)⁻¹ XᵀY on features with a constant 1 appended (its row is the bias), times ``logit_scale``
so the softmax of the regression outputs is not flat. ``lambda: auto`` chooses λ after every arrival from the
sums (``continual/model/ridge.py``); the λ used is a round metric (``ridge_lambda``).
"""
from __future__ import annotations

import torch

from continual.model.encoder import embed_rows
from continual.model.ridge import choose_lambda, parse_lambda, solve_head, with_bias
from continual.strategies.closed_form import ClosedForm


class Ridge(ClosedForm):
    name = "ridge"
    state_file = "ridge.safetensors"

    def __init__(self, params: dict):
        super().__init__(params)
        cfg = params["strategy"]["ridge"]
        self.lam = parse_lambda(cfg["lambda"])  # None: auto
        self.chosen: float | None = None
        self.projection_dim = int(cfg["projection_dim"])
        self.scale = float(cfg["logit_scale"])
        self.seed = int(params["seed"])

    def prepare(self, model, classes: int) -> None:
        projection = self.sums.get("projection")
        if projection is None and self.projection_dim > 0:
            generator = torch.Generator().manual_seed(self.seed)
            projection = torch.randn(model.embedding_dim, self.projection_dim, generator=generator)
        if projection is not None:
            model.projection = projection.to(model.head.weight)
            self.set_head(model, torch.zeros(classes, projection.shape[1]), torch.zeros(classes))

    def fit(self, model, features: torch.Tensor, targets: torch.Tensor) -> None:
        classes = len(model.labels)
        x = with_bias(features)
        y = torch.nn.functional.one_hot(targets, classes).double()
        gram = self._grown("gram", x.shape[1], x.shape[1]) + x.T @ x
        xty = self._grown("xty", x.shape[1], classes) + x.T @ y
        self.sums = {"gram": gram, "xty": xty}
        if model.projection is not None:
            self.sums["projection"] = model.projection.detach().cpu().float()
        self.chosen = self.lam or choose_lambda(gram, xty)
        weight, bias = solve_head(gram, xty, self.chosen)
        self.set_head(model, self.scale * weight, self.scale * bias)

    def save(self, folder, context) -> dict:
        super().save(folder, context)
        return {"ridge_lambda": self.chosen}


def fit_ridge_head(model, tokenizer, rows: list[dict], params: dict, batch_size: int = 64) -> None:
    """Give ``model`` the head this strategy fits on one arrival of ``rows`` (text, label): for benchmarks and tests
    that want a real head on the frozen encoder without running a round."""
    ridge = Ridge(params)
    ridge.prepare(model, len(model.labels))
    ridge.fit(model, embed_rows(model, tokenizer, [r["text"] for r in rows], batch_size),
              torch.tensor([model.label2id[r["label"]] for r in rows]))

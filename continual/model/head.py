"""The head of a fine-tuning round, refit in closed form after training (``train.head_refit``).

A head trained by cross-entropy on a class-incremental arrival leans toward the newest classes: they have
32 rows each at hand, the buffered ones 3 or 4. A closed-form refit under the updated encoder, with every
class weighing the same, removes that lean. ``train.head_refit_with`` chooses how:

- ``prototypes``: each class's row is its prototype over the arrival and the replay buffer (a nearest-class-
  mean head, as new rows start);
- ``ridge``: a class-balanced ridge solution over the arrival and the replay buffer;
- ``sums``: a ridge solution from running sums XᵀX, XᵀY over every arrival so far, each arrival's features
  taken under the encoder as it was after that arrival's round (kept in ``head_sums.safetensors``): all the
  data, no stored text, at the cost of features that are a few rounds stale.

λ and the logit scale of the ridge solutions are ``strategy.ridge.lambda`` (``auto``: chosen from the sums,
``continual/model/ridge.py``) and ``strategy.ridge.logit_scale``.
A class with no row at hand keeps its trained row.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from continual.model.encoder import embed_rows, set_prototype_rows
from continual.model.ridge import choose_lambda, padded, parse_lambda, solve_head, with_bias

SUMS_FILE = "head_sums.safetensors"
WHEN = ("never", "on_growth", "always")
WITH = ("prototypes", "ridge", "sums")


class HeadRefit:
    def __init__(self, params: dict):
        train = params["train"]
        self.when, self.how = train["head_refit"], train["head_refit_with"]
        if self.when not in WHEN or self.how not in WITH:
            raise ValueError(f"train.head_refit must be one of {WHEN} and train.head_refit_with one of {WITH}, "
                             f"not {self.when!r} and {self.how!r}")
        self.prototype_scale = float(train["prototype_scale"])
        self.lam = parse_lambda(params["strategy"]["ridge"]["lambda"])  # None: auto, chosen from the sums
        self.chosen: float | None = None
        self.logit_scale = float(params["strategy"]["ridge"]["logit_scale"])
        self.sums: dict[str, torch.Tensor] = {}

    @property
    def keeps_sums(self) -> bool:
        return self.when != "never" and self.how == "sums"

    def restore(self, folder: Path) -> None:
        if self.keeps_sums and (folder / SUMS_FILE).exists():
            self.sums = load_file(folder / SUMS_FILE)

    def apply(self, model, tokenizer, rows: list[dict], memory: list[dict], grew: bool, batch_size: int) -> bool:
        """Refit after training on ``rows`` (the arrival) with ``memory`` (the buffer); True if it did."""
        due = self.when == "always" or (self.when == "on_growth" and grew)
        if self.keeps_sums:  # every round adds its arrival, whether or not the head is refit now
            seen = rows
        elif due:
            seen = rows + memory
        else:
            return False
        features = embed_rows(model, tokenizer, [r["text"] for r in seen], batch_size, f"head refit ({self.how})")
        targets = torch.tensor([model.label2id[r["label"]] for r in seen])
        classes = len(model.labels)
        if self.how == "prototypes":
            set_prototype_rows(model, features, targets.tolist(), sorted(set(targets.tolist())), self.prototype_scale)
            return True
        x, y = with_bias(features), torch.nn.functional.one_hot(targets, classes).double()
        if self.how == "sums":
            self.sums = {"gram": padded(self.sums.get("gram"), x.shape[1], x.shape[1]) + x.T @ x,
                         "xty": padded(self.sums.get("xty"), x.shape[1], classes) + x.T @ y}
            if not due:
                return False
            gram, xty, present = self.sums["gram"], self.sums["xty"], (self.sums["xty"][:-1].abs().sum(0) > 0)
        else:  # weighted least squares, each class's rows summing to n / classes: XᵀDX and XᵀDY, D = diag(w)
            counts = torch.bincount(targets, minlength=classes).double()
            w = (len(seen) / ((counts > 0).sum() * counts[targets])).unsqueeze(1)
            gram, xty, present = x.T @ (w * x), x.T @ (w * y), counts > 0
        self.chosen = self.lam or choose_lambda(gram, xty)
        weight, bias = solve_head(gram, xty, self.chosen)
        with torch.no_grad():
            for c in present.nonzero().flatten().tolist():
                model.head.weight[c] = (self.logit_scale * weight[c]).to(model.head.weight)
                model.head.bias[c] = float(self.logit_scale * bias[c])
        return True

    def save(self, folder: Path) -> None:
        if self.keeps_sums and self.sums:
            save_file({k: v.contiguous() for k, v in self.sums.items()}, folder / SUMS_FILE)

"""Adapt, then freeze: fine-tune the encoder on the first arrival(s), then keep it and solve a ridge head.

"Learn or Recall?" (ACL 2024) found that in text continual learning the forgetting sits in the classifier, not
the encoder; APER/SimpleCIL (IJCV 2024) and First Session Adaptation adapt the encoder on the first session
only and use a closed-form head after. Here:

- **Adapting rounds** (the first ``strategy.adapt.rounds``, and the rounds of the arrivals named in
  ``strategy.adapt.arrivals``) fine-tune the whole classifier as the fine-tuning strategies do (prototype head,
  slow encoder, fast head, warm-up). A later adapting round also replays a class-balanced sample of
  ``strategy.replay.mem_size`` earlier train rows, read from the workspace (nothing is stored for it). Then
  every train row so far is embedded under the new encoder into fresh ridge sums and the head is solved.
- **Frozen rounds** load the previous round's encoder, add the arrival's features to the sums and solve the
  head (λ: ``strategy.ridge.lambda``, ``auto`` by default): one forward pass, no buffer, and the encoder cannot
  forget. Their ONNX graphs are the previous round's with the head swapped in (``continual/model/onnx_head.py``).
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch

from continual.model.encoder import LogitsOnly, embed_rows
from continual.strategies.base import RoundContext, RoundInputs, Trained
from continual.strategies.finetune import FineTuning
from continual.strategies.ridge import Ridge


class Adapt(FineTuning):
    name = "adapt"

    def __init__(self, params: dict):
        super().__init__(params)
        cfg = params["strategy"]["adapt"]
        self.rounds = int(cfg["rounds"])
        self.arrivals = [str(a) for a in (cfg.get("arrivals") or [])]
        if self.rounds < 1:
            raise ValueError(f"strategy.adapt.rounds must be at least 1, not {self.rounds}")
        self.mem_size = int(params["strategy"]["replay"]["mem_size"])
        self.seed = int(params["seed"])
        self.ridge = Ridge(params)
        self.frozen = False

    def begin(self, index: int, arrival: str) -> None:
        super().begin(index, arrival)
        self.frozen = not (index <= self.rounds or arrival in self.arrivals)

    # A frozen round is the ridge strategy's, on this stream's own encoder: the previous round's, head grown
    # (``FineTuning.start_model``), in one process.
    def processes(self) -> int:
        return 1 if self.frozen else super().processes()

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        if self.frozen:
            self.ridge.restore(folder, context, model)

    def train(self, model: LogitsOnly, context: RoundContext, inputs: RoundInputs) -> Trained | None:
        if self.frozen:
            return self.ridge.train(model, context, inputs)
        return super().train(model, context, inputs)

    def training_rows(self, rows: list[dict], earlier) -> list[dict]:
        if self.index <= 1 or self.mem_size <= 0:
            return rows
        return rows + balanced_sample(earlier(), self.mem_size, self.seed + self.index)

    def after_training(self, model, tokenizer, seen, batch_size: int) -> bool:
        """Fresh ridge sums over every train row so far, under the encoder just trained; the head solved."""
        rows = seen()
        self.ridge.sums = {}
        self.ridge.prepare(model, len(model.labels))
        self.ridge.fit(model, embed_rows(model, tokenizer, [r["text"] for r in rows], batch_size,
                                         "adapt: every train row so far, for the ridge head"),
                       torch.tensor([model.label2id[r["label"]] for r in rows]))
        return True

    def save(self, folder: Path, context: RoundContext) -> dict:
        return {**super().save(folder, context), **self.ridge.save(folder, context), "adapted": not self.frozen}


def balanced_sample(rows: list[dict], size: int, seed: int) -> list[dict]:
    """Up to ``size`` rows, as even across labels as the rows allow, drawn with ``seed``."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    for group in by_label.values():
        rng.shuffle(group)
    picked: list[dict] = []
    depth = 0
    while len(picked) < size and any(depth < len(g) for g in by_label.values()):
        for label in sorted(by_label):
            if depth < len(by_label[label]) and len(picked) < size:
                picked.append(by_label[label][depth])
        depth += 1
    return picked

"""The closed-form template: a frozen encoder, running sums as the only state, a solved head.

A round of ``ncm`` or ``ridge`` costs one forward pass over the arrival: its features are added to sums kept
in safetensors in the round folder, and the head is solved from the sums. Nothing is trained, so nothing is
forgotten, and no text is stored. The encoder is the pretrained base's in every round, so there is nothing
for a LoRA adapter to adapt, and one process does the whole round.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from continual.model import adapters
from continual.model.encoder import LogitsOnly, embed_rows
from continual.model.ridge import padded
from continual.model.trainer import ProgressLog
from continual.strategies.base import RoundContext, RoundInputs, Strategy, Trained, base_classifier


class ClosedForm(Strategy):
    state_file = "sums.safetensors"

    def __init__(self, params: dict):
        super().__init__(params)
        self.sums: dict[str, torch.Tensor] = {}

    def begin(self, index: int, arrival: str) -> None:
        super().begin(index, arrival)
        adapter = adapters.adapter_kind(self.params)
        if adapter != "none":
            raise ValueError(f"strategy {self.name} keeps the encoder frozen and trains no weights of it: "
                             f"model.adapter: {adapter} has nothing to adapt. Set model.adapter: none")

    def start_model(self, previous, labels):
        # The state is the sums, not the weights: every round reads the pretrained encoder, frozen.
        model, tokenizer = base_classifier(self.params, labels)
        return model, tokenizer, list(labels)

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        path = folder / self.state_file
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: round {folder.name} was not a {self.name} round, so its "
                                    f"sums cannot be continued. Rerun the stream from round 1 with this strategy.")
        self.sums = load_file(path)

    def train(self, model: LogitsOnly, context: RoundContext, inputs: RoundInputs) -> Trained:
        """One forward pass over the arrival, then the head is solved from the sums."""
        classifier, rows = model.model, inputs.rows
        with inputs.phases("head"):
            log = ProgressLog(f"{self.name} forward pass")
            begin = time.perf_counter()
            self.prepare(classifier, len(classifier.labels))
            features = embed_rows(classifier, context.tokenizer, [r["text"] for r in rows], inputs.batch_size,
                                  f"round {inputs.key}: embed")
            label2id = classifier.label2id
            self.fit(classifier, features, torch.tensor([label2id[r["label"]] for r in rows]))
            log.examples, log.seconds = len(rows), time.perf_counter() - begin
        return Trained(log, len(rows), 0)

    def prepare(self, model, classes: int) -> None:
        """Before features are computed: attach what the head reads (e.g. a projection)."""

    def fit(self, model, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Add the arrival's ``features`` [n x d] (float64) and label ids to the sums; solve the head."""
        raise NotImplementedError

    def save(self, folder: Path, context: RoundContext) -> dict:
        save_file({k: v.contiguous() for k, v in self.sums.items()}, folder / self.state_file,
                  metadata={"strategy": self.name})
        return {}

    def _grown(self, key: str, rows: int, columns: int) -> torch.Tensor:
        return padded(self.sums.get(key), rows, columns)

    @staticmethod
    @torch.no_grad()
    def set_head(model, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Head rows from a solved [classes x features] weight and bias."""
        model.head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(model.head.weight.device)
        model.head.weight.copy_(weight.to(model.head.weight))
        model.head.bias.copy_(bias.to(model.head.bias))

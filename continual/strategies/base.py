"""What every strategy declares, at the same few points of a round (after Mammoth's one-file methods).

A strategy gives Avalanche plugins for training, restores its state from the previous round folder before
training, and saves it into the new round folder after. State files are plain data (JSONL rows,
safetensors), never pickles, so a round folder loads in a later version of the code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from continual.model.data import avalanche_dataset


@dataclass
class RoundContext:
    """What a round shares with its strategy: tokenizer, label map, and every row the round has touched."""

    tokenizer: object
    label2id: dict[str, int]
    max_length: int
    rows: list[dict] = field(default_factory=list)

    def dataset(self, rows: list[dict]):
        """An Avalanche dataset of ``rows``; each item remembers its row in ``self.rows``."""
        first = len(self.rows)
        self.rows.extend(rows)
        return avalanche_dataset(rows, list(range(first, first + len(rows))), self.tokenizer, self.label2id,
                                 self.max_length)

    def rows_of(self, dataset) -> list[dict]:
        return [self.rows[int(i)] for i in dataset.row_ids]


class Strategy:
    name = "base"
    from_base = False    # True: start every round from the pretrained base (joint retraining)
    closed_form = False  # True: the encoder stays frozen and ``fit`` solves the head; no gradient steps
    keeps_encoder = False  # with closed_form: the frozen encoder is the previous round's, not the base's
    parts: tuple = ()  # a composed strategy lists its parts; each contributes plugins and state

    def __init__(self, params: dict):
        self.params = params
        self.parts_ = [part(params) for part in self.parts]

    def begin(self, index: int, arrival: str) -> None:
        """Before round ``index`` (1-based) on ``arrival`` (its name): a strategy whose kind of round changes
        along the stream (``adapt``) sets ``closed_form`` here; default: nothing."""

    def training_rows(self, rows: list[dict], earlier) -> list[dict]:
        """The rows a fine-tuning round trains on, given the arrival's and ``earlier()`` (every earlier
        arrival's train rows, read on demand); default: the arrival's."""
        return rows

    def after_training(self, model, tokenizer, seen, batch_size: int) -> bool:
        """After a fine-tuning round trained: True if the strategy set the head itself (then no head refit runs).
        ``seen()`` gives every train row of the stream so far."""
        return False

    def plugins(self) -> list:
        return [plugin for part in self.parts_ for plugin in part.plugins()]

    def prepare_model(self, model: torch.nn.Module, index: int) -> None:
        """Change the classifier before round ``index`` trains (olora adds the round's adapter); default: nothing."""

    def train_keys(self, keys_so_far: list[str]) -> list[str]:
        """The arrivals whose train split this round trains on (the newest, unless joint)."""
        return keys_so_far[-1:]

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        for part in self.parts_:
            part.restore(folder, context, model)

    def memory_rows(self, context: RoundContext) -> list[dict]:
        """The stored rows of earlier arrivals this strategy keeps (a replay buffer), for the head refit."""
        return [row for part in self.parts_ for row in part.memory_rows(context)]

    def save(self, folder: Path, context: RoundContext) -> dict:
        """Write state files into ``folder``; return figures for metrics.json (e.g. buffer size)."""
        figures: dict = {}
        for part in self.parts_:
            figures.update(part.save(folder, context))
        return figures

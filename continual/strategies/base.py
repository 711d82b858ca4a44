"""What every strategy declares, at the same few points of a round (after Mammoth's one-file methods and
Avalanche's training templates). ``continual.rounds.round.run_round`` asks, in this order:

    begin(index, arrival)            what kind of round this is; refuse settings the strategy cannot honour
    processes()                      how many processes train it (a closed-form round: one)
    start_model(previous, labels)    the classifier it starts from: the previous round's, or a fresh one
    train_keys(keys)                 the arrivals whose train split it reads
    restore(folder, context, model)  its state, from the previous round folder
    train(model, context, inputs)    train (or solve) the classifier; None on ranks other than 0
    save(folder, context)            its state, into the new round folder; figures for metrics.json

Two templates implement them: ``FineTuning`` (gradient steps, ``finetune.py``) and ``ClosedForm`` (one
forward pass and a solved head, ``closed_form.py``); each strategy is one of them and says only what differs.
State files are plain data (JSONL rows, safetensors), never pickles, so a round folder loads in a later
version of the code.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from continual.model import adapters
from continual.model.data import avalanche_dataset
from continual.model.encoder import LogitsOnly, new_classifier
from continual.model.pretrained import base_model_path
from continual.model.trainer import ProgressLog
from service.pooled import PooledClassifier


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


class PhaseClock(Protocol):
    """The round's clock: ``with phases("head"): ...`` times a block, ``phases.add(name, seconds)`` adds time."""

    def __call__(self, name: str) -> AbstractContextManager: ...

    def add(self, name: str, seconds: float) -> None: ...


@dataclass
class RoundInputs:
    """What a round hands its strategy's ``train``."""

    key: str
    index: int                          # the arrival's place in the stream, from 1
    parent: Path | None                 # the previous round's folder (None in round 1)
    new_labels: list[str]               # the labels the head gained this round (all of them on a fresh classifier)
    rows: list[dict]                    # the train rows of ``train_keys``, each with its "arrival"
    earlier: Callable[[], list[dict]]   # every earlier arrival's train rows, read on demand
    seen: Callable[[], list[dict]]      # every train row of the stream so far, read on demand
    batch_size: int                     # train.eval_batch_size: the forward passes outside training
    phases: PhaseClock
    device: torch.device | None = None  # this rank's, under torch.distributed


@dataclass
class Trained:
    """What ``train`` did, for metrics.json and train_log.csv."""

    log: ProgressLog        # examples, seconds in the epochs, one (step, loss, lr) row per step
    rows: int               # the rows trained on
    trainable_params: int   # 0 when nothing took a gradient step


class Strategy:
    name = "base"
    parts: tuple = ()  # a composed strategy lists its parts; each contributes plugins and state

    def __init__(self, params: dict):
        self.params = params
        self.parts_ = [part(params) for part in self.parts]
        self.index = 0

    def begin(self, index: int, arrival: str) -> None:
        """Before round ``index`` (1-based) on ``arrival`` (its name): a strategy whose kind of round changes
        along the stream (``adapt``) decides it here; every one refuses what it cannot train."""
        self.index = index
        adapters.adapter_kind(self.params)  # an unknown model.adapter is refused before any work

    def processes(self) -> int:
        """How many processes train this round (``train.processes`` for gradient steps)."""
        return 1

    def start_model(self, previous: tuple[PooledClassifier, object] | None,
                    labels: list[str]) -> tuple[PooledClassifier, object, list[str]]:
        """(model, tokenizer, the labels new to its head) this round starts from, given the previous round's
        model and tokenizer (None in round 1) and every label of the stream so far."""
        raise NotImplementedError

    def train_keys(self, keys_so_far: list[str]) -> list[str]:
        """The arrivals whose train split this round trains on (the newest, unless joint)."""
        return keys_so_far[-1:]

    def restore(self, folder: Path, context: RoundContext, model: LogitsOnly) -> None:
        """Read the state the previous round saved in ``folder``; ``model`` is the one ``train`` will get."""
        for part in self.parts_:
            part.restore(folder, context, model)

    def train(self, model: LogitsOnly, context: RoundContext, inputs: RoundInputs) -> Trained | None:
        """Train ``model`` on ``inputs.rows``; None on a rank other than 0, which writes nothing."""
        raise NotImplementedError

    def save(self, folder: Path, context: RoundContext) -> dict:
        """Write state files into ``folder``; return figures for metrics.json (e.g. buffer size)."""
        figures: dict = {}
        for part in self.parts_:
            figures.update(part.save(folder, context))
        return figures


def base_classifier(params: dict, labels: list[str]) -> tuple[PooledClassifier, object]:
    """A fresh classifier for ``labels`` on the pretrained ``model.base``, with a new LoRA adapter under
    ``model.adapter: lora``."""
    model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), labels,
                                      int(params["model"]["max_length"]))
    if adapters.adapter_kind(params) == "lora":
        adapters.attach(model, params)
    return model, tokenizer

"""The fine-tuning template: gradient steps on the classifier, then the head refit in closed form.

A round starts from the previous round's classifier, its head grown by the new labels (round 1: from the
pretrained base). A new class's head row starts at its prototype under the current encoder; then Avalanche's
template trains on the rows, with the plugins of the strategy (replay's loader, EWC's penalty, O-LoRA's loss),
in ``train.processes`` processes if asked. Rank 0 then refits the head in closed form (``train.head_refit``,
``continual/model/head.py``), whose state the strategy saves beside its own.

A strategy of this kind says only what differs, at these points: ``plugins``, ``training_rows``,
``prepare_model``, ``after_training``, ``memory_rows``, and its state's ``restore`` and ``save``.
"""
from __future__ import annotations

import time
from pathlib import Path

from continual.model import adapters, distributed
from continual.model.encoder import LogitsOnly, embed_rows, grow_head, set_prototype_rows
from continual.model.head import HeadRefit
from continual.model.trainer import seed_everything, train_one_experience
from continual.strategies.base import RoundContext, RoundInputs, Strategy, Trained, base_classifier
from service.pooled import PooledClassifier


class FineTuning(Strategy):
    refits_head = True  # False: the strategy trains on every arrival at once (joint), no lean to undo

    def __init__(self, params: dict):
        super().__init__(params)
        self.refit: HeadRefit | None = None

    def processes(self) -> int:
        return distributed.processes(self.params)

    def start_model(self, previous, labels):
        if previous is None:
            model, tokenizer = base_classifier(self.params, labels)
            new_labels = list(labels)
        else:
            model, tokenizer = previous
            new_labels = grow_head(model, labels)
        self.prepare_model(model, self.index)  # olora: this round's own adapter, the earlier ones frozen
        adapters.for_training(model, self.params)  # a no-op unless lora with gradient checkpointing
        return model, tokenizer, new_labels

    def prepare_model(self, model: PooledClassifier, index: int) -> None:
        """Change the classifier before round ``index`` trains (olora adds the round's adapter); default: nothing."""

    def plugins(self) -> list:
        return [plugin for part in self.parts_ for plugin in part.plugins()]

    def training_rows(self, rows: list[dict], earlier) -> list[dict]:
        """The rows the round trains on, given the arrival's and ``earlier()`` (every earlier arrival's train
        rows, read on demand); default: the arrival's."""
        return rows

    def after_training(self, model: PooledClassifier, tokenizer, seen, batch_size: int) -> bool:
        """After training: True if the strategy set the head itself (then no head refit runs). ``seen()`` gives
        every train row of the stream so far."""
        return False

    def memory_rows(self, context: RoundContext) -> list[dict]:
        """The stored rows of earlier arrivals this strategy keeps (a replay buffer), for the head refit."""
        return [row for part in self.parts_ for row in part.memory_rows(context)]

    def train(self, model: LogitsOnly, context: RoundContext, inputs: RoundInputs) -> Trained | None:
        classifier, tokenizer, train = model.model, context.tokenizer, self.params["train"]
        rows = self.training_rows(inputs.rows, inputs.earlier)
        if inputs.new_labels:  # a new class's row starts at its prototype under the current encoder
            with inputs.phases("prototypes"):
                self.set_prototypes(classifier, tokenizer, rows, inputs)
        dataset = context.dataset(rows)
        steps = -(-len(rows) // int(train["batch_size"]))
        rank, seed = distributed.rank(), int(self.params["seed"]) + inputs.index
        if rank:  # its own dropout masks; rank 0 keeps one process's random stream
            seed_everything(seed + 7919 * rank)
        begin = time.perf_counter()
        log = train_one_experience(model, dataset, adapters.train_settings(self.params), self.plugins(), steps,
                                   inputs.index - 1, desc=f"round {inputs.index} {inputs.key} [{self.name}]",
                                   seed=seed, device=inputs.device)
        inputs.phases.add("train", log.seconds)
        inputs.phases.add("after_training", log.closing_seconds)
        inputs.phases.add("train_setup", time.perf_counter() - begin - log.seconds - log.closing_seconds)
        distributed.leave()  # the last collective was EWC's Fisher sums: rank 0 goes on alone
        if rank:
            return None
        with inputs.phases("head"):
            if not self.after_training(classifier, tokenizer, inputs.seen, inputs.batch_size) and self.refits_head:
                self.refit_head(classifier, tokenizer, rows, context, inputs)
        return Trained(log, len(rows), sum(p.numel() for p in classifier.parameters() if p.requires_grad))

    def set_prototypes(self, model: PooledClassifier, tokenizer, rows: list[dict], inputs: RoundInputs) -> None:
        label2id = model.label2id
        features = embed_rows(model, tokenizer, [r["text"] for r in rows], inputs.batch_size,
                              f"round {inputs.key}: prototypes")
        set_prototype_rows(model, features, [label2id[r["label"]] for r in rows],
                           [label2id[x] for x in inputs.new_labels], float(self.params["train"]["prototype_scale"]))

    def refit_head(self, model: PooledClassifier, tokenizer, rows: list[dict], context: RoundContext,
                   inputs: RoundInputs) -> None:
        """The closed-form head refit (``train.head_refit``), continuing the previous round's sums."""
        self.refit = HeadRefit(self.params)
        if inputs.parent is not None:
            self.refit.restore(inputs.parent)
        self.refit.apply(model, tokenizer, rows, self.memory_rows(context),
                         bool(inputs.new_labels) and inputs.parent is not None, inputs.batch_size)

    def save(self, folder: Path, context: RoundContext) -> dict:
        figures = super().save(folder, context)
        if self.refit is not None:
            self.refit.save(folder)
            if self.refit.chosen is not None:
                figures["head_refit_lambda"] = self.refit.chosen
        return figures

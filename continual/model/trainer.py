"""Avalanche's supervised template, fitted to variable-length text, with a progress bar and a loss log; under
torch.distributed (``continual.model.distributed``) it trains each rank's share of the global batch through DDP."""
from __future__ import annotations

import random
import time

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from continual import progress
from continual.model import distributed


class TextTemplate(SupervisedTemplate):
    """Passes the dataset's padding collate to the loaders.

    Avalanche 0.6 builds a plain DataLoader without the dataset's collate_fn for streams without task
    labels, which fails on tensors of different lengths (checked here). Replay replaces the train loader
    with its own ReplayDataLoader, which does honour the collate_fn.

    Whichever loader a plugin leaves, training iterates it through ``SharedBatches``: the batch order comes
    from the round's ``seed``, and with N processes each rank trains on its share of every global batch, its
    forward pass through ``ddp`` and its loss scaled so that DDP's mean over ranks is the global batch's mean.
    ``self.model`` stays the plain model, so plugins (EWC's penalty and Fisher pass) see its own names.
    """

    def __init__(self, *, seed: int = 0, pad_token_id: int = 0, ddp: DistributedDataParallel | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed, self.pad_token_id, self.ddp, self.shared = seed, pad_token_id, ddp, None

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False,
                              drop_last=False, **kwargs):
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.train_mb_size, shuffle=shuffle,
                                     drop_last=drop_last, collate_fn=self.adapted_dataset.collate_fn)

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None, persistent_workers=False,
                             **kwargs):
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False,
                                     collate_fn=self.adapted_dataset.collate_fn)

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)  # the plugins' turn: replay swaps in its loader here
        self.shared = self.dataloader = distributed.SharedBatches(self.dataloader, self.seed, self.pad_token_id)

    def forward(self):
        return super().forward() if self.ddp is None else self.ddp(self.mb_x)

    def criterion(self):
        """A mean over this rank's rows, reweighted to its share of the global batch (the last one may split
        unevenly, or leave a rank only a stand-in row, weighted 0)."""
        loss = super().criterion()
        if self.ddp is None:
            return loss
        return loss * (self.shared.own_size * distributed.world() / self.shared.global_size)


class ProgressLog(SupervisedPlugin, supports_distributed=True):
    """A tqdm bar per epoch (examples/s in its rate) and one (step, loss, lr) row per optimiser step."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc
        self.rows: list[tuple[int, float, float]] = []
        self.examples = 0
        self.seconds = 0.0  # in the epochs
        self.closing_seconds = 0.0  # from the last epoch's end to the end of the plugins' after-training work
        self._epoch_end = 0.0
        self._bar = None
        self._start = 0.0

    def before_training_epoch(self, strategy, **kwargs):
        total = len(strategy.dataloader) if hasattr(strategy.dataloader, "__len__") else None
        self._bar = progress.bar(total=total, desc=f"{self.desc} epoch {strategy.clock.train_exp_epochs + 1}",
                                 unit="batch", disable=bool(distributed.rank()))  # one bar per round, rank 0's
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        loss = distributed.mean_over_ranks(float(strategy.loss.detach()), strategy.device)
        self.examples += strategy.shared.global_size  # every rank's rows
        self.rows.append((len(self.rows) + 1, loss, strategy.optimizer.param_groups[0]["lr"]))
        elapsed = time.perf_counter() - self._start
        self._bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{(self.examples / max(self.seconds + elapsed, 1e-9)):.1f}",
                              refresh=False)
        self._bar.update(1)

    def after_training_epoch(self, strategy, **kwargs):
        self._epoch_end = time.perf_counter()
        self.seconds += self._epoch_end - self._start
        self._bar.close()

    def after_training_exp(self, strategy, **kwargs):
        """The plugins listed before this one have done their after-training work (EWC's Fisher pass)."""
        self.closing_seconds = time.perf_counter() - self._epoch_end


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's random streams, all from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_one_experience(model: torch.nn.Module, dataset, train: dict, plugins: list, steps_per_epoch: int,
                         past_rounds: int, desc: str, extra: list | None = None, seed: int = 0,
                         device: torch.device | str | None = None) -> ProgressLog:
    """Train ``model`` (a LogitsOnly-wrapped PooledClassifier) on one experience built from ``dataset`` with the given Avalanche plugins.

    ``past_rounds`` sets Avalanche's experience counter, so that plugins with restored state (EWC's
    penalty keyed by experience) treat this as experience number ``past_rounds``. ``seed`` draws the batch
    order; ``device`` is this rank's under torch.distributed (default: cuda when torch sees it, else cpu).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ddp = None
    if distributed.world() > 1:  # the model on its device first: DDP copies rank 0's weights to every rank
        device = torch.device(device)
        ddp = DistributedDataParallel(model.to(device), device_ids=[device] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)  # BERT's buffers are constants
    # Two speeds (SLCA, Zhang et al., ICCV 2023): a slow encoder forgets less, a fast head still fits new classes.
    head = list(model.model.head.parameters())
    head_ids = {id(p) for p in head}
    encoder = [p for p in model.parameters() if id(p) not in head_ids]
    # fused: one kernel per tensor. On the CPU torch's default is a loop of small ops per tensor, which on
    # MiniLM took 233 ms of each step, fused 39 ms (a step's forward and backward: ~800 ms); the same update
    # up to float rounding.
    optimizer = torch.optim.AdamW([{"params": encoder, "lr": float(train["lr"])},
                                   {"params": head, "lr": float(train["head_lr"])}],
                                  weight_decay=float(train["weight_decay"]), fused=True)
    total_steps = max(1, steps_per_epoch * int(train["epochs"]))
    schedule = get_linear_schedule_with_warmup(optimizer, int(float(train["warmup_ratio"]) * total_steps), total_steps)
    progress = ProgressLog(desc)
    lr_steps = LRSchedulerPlugin(schedule, step_granularity="iteration", reset_scheduler=False, reset_lr=False)
    lr_steps.supports_distributed = True  # each rank steps its own copy of one schedule (Avalanche warns otherwise)
    strategy = TextTemplate(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=int(train["batch_size"]), train_epochs=int(train["epochs"]),
        eval_mb_size=int(train["eval_batch_size"]), device=device, seed=seed, ddp=ddp,
        pad_token_id=getattr(model, "pad_token_id", 0),
        plugins=[*plugins, lr_steps, progress, *(extra or [])],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.clock.train_exp_counter = past_rounds
    experience = benchmark_from_datasets(train=[dataset]).train_stream[0]
    strategy.train(experience, eval_streams=[])
    return progress


"""Avalanche's supervised template, fitted to variable-length text, with a progress bar and a loss log."""
from __future__ import annotations

import time

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup


class TextTemplate(SupervisedTemplate):
    """Passes the dataset's padding collate to the loaders.

    Avalanche 0.6 builds a plain DataLoader without the dataset's collate_fn for streams without task
    labels, which fails on tensors of different lengths (checked here). Replay replaces the train loader
    with its own ReplayDataLoader, which does honour the collate_fn.
    """

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False,
                              drop_last=False, **kwargs):
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.train_mb_size, shuffle=shuffle,
                                     drop_last=drop_last, collate_fn=self.adapted_dataset.collate_fn)

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None, persistent_workers=False,
                             **kwargs):
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False,
                                     collate_fn=self.adapted_dataset.collate_fn)


class ProgressLog(SupervisedPlugin):
    """A tqdm bar per epoch (examples/s in its rate) and one (step, loss, lr) row per optimiser step."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc
        self.rows: list[tuple[int, float, float]] = []
        self.examples = 0
        self.seconds = 0.0
        self._bar = None
        self._start = 0.0

    def before_training_epoch(self, strategy, **kwargs):
        total = len(strategy.dataloader) if hasattr(strategy.dataloader, "__len__") else None
        self._bar = tqdm(total=total, desc=f"{self.desc} epoch {strategy.clock.train_exp_epochs + 1}",
                         unit="batch", dynamic_ncols=True, mininterval=1.0)
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        n = len(strategy.mb_y)
        self.examples += n
        loss = float(strategy.loss.detach())
        self.rows.append((len(self.rows) + 1, loss, strategy.optimizer.param_groups[0]["lr"]))
        elapsed = time.perf_counter() - self._start
        self._bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{(self.examples / max(self.seconds + elapsed, 1e-9)):.1f}",
                              refresh=False)
        self._bar.update(1)

    def after_training_epoch(self, strategy, **kwargs):
        self.seconds += time.perf_counter() - self._start
        self._bar.close()


def train_one_experience(model: torch.nn.Module, dataset, train: dict, plugins: list, steps_per_epoch: int,
                         past_rounds: int, desc: str, extra: list | None = None) -> ProgressLog:
    """Train ``model`` (a LogitsOnly-wrapped PooledClassifier) on one experience built from ``dataset`` with the given Avalanche plugins.

    ``past_rounds`` sets Avalanche's experience counter, so that plugins with restored state (EWC's
    penalty keyed by experience) treat this as experience number ``past_rounds``.
    """
    # Two speeds (SLCA, Zhang et al., ICCV 2023): a slow encoder forgets less, a fast head still fits new classes.
    head = list(model.model.head.parameters())
    head_ids = {id(p) for p in head}
    encoder = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": encoder, "lr": float(train["lr"])},
                                   {"params": head, "lr": float(train["head_lr"])}],
                                  weight_decay=float(train["weight_decay"]))
    total_steps = max(1, steps_per_epoch * int(train["epochs"]))
    schedule = get_linear_schedule_with_warmup(optimizer, int(float(train["warmup_ratio"]) * total_steps), total_steps)
    progress = ProgressLog(desc)
    strategy = TextTemplate(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=int(train["batch_size"]), train_epochs=int(train["epochs"]),
        eval_mb_size=int(train["eval_batch_size"]), device="cpu" if not torch.cuda.is_available() else "cuda",
        plugins=[*plugins, LRSchedulerPlugin(schedule, step_granularity="iteration", reset_scheduler=False,
                                             reset_lr=False), progress, *(extra or [])],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.clock.train_exp_counter = past_rounds
    experience = benchmark_from_datasets(train=[dataset]).train_stream[0]
    strategy.train(experience, eval_streams=[])
    return progress

"""Experience replay: Avalanche's ReplayPlugin with a reservoir or class-balanced storage policy.

Avalanche keeps the buffer in memory only; we save it as text rows (buffer.jsonl, with each row's reservoir
weight) and rebuild the storage policy's groups from them in the next round's process.

With ``train.processes`` > 1 every rank restores the same buffer.jsonl and draws the same global batches, new and
memory rows alike (``continual.model.distributed``); rank 0 alone updates the buffer it writes after training.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader
from avalanche.training.plugins import ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer

from continual.arrivals.jsonl import read_jsonl, write_jsonl
from continual.strategies.base import RoundContext
from continual.strategies.finetune import FineTuning

BUFFER_FILE = "buffer.jsonl"


class GlobalBatchReplay(ReplayPlugin, supports_distributed=True):
    """ReplayPlugin whose loader draws global batches under torch.distributed too.

    Avalanche's ReplayDataLoader puts a DistributedSampler on the data and on the buffer as soon as
    torch.distributed is initialised, so each rank would draw batches of its own. A round instead draws the
    global batch exactly as one process does and shares it out (``continual.model.distributed.SharedBatches``).
    The same call as ReplayPlugin's own, with distributed sampling off; one process sees no difference.
    """

    def before_training_exp(self, strategy, num_workers: int = 0, shuffle: bool = True, drop_last: bool = False,
                            **kwargs):
        if len(self.storage_policy.buffer) == 0:
            return
        strategy.dataloader = ReplayDataLoader(
            strategy.adapted_dataset, self.storage_policy.buffer, oversample_small_tasks=True,
            batch_size=self.batch_size or strategy.train_mb_size,
            batch_size_mem=self.batch_size_mem or strategy.train_mb_size,
            task_balanced_dataloader=self.task_balanced_dataloader, num_workers=num_workers, shuffle=shuffle,
            drop_last=drop_last, distributed_sampling=False)


class Replay(FineTuning):
    name = "replay"

    def __init__(self, params: dict):
        super().__init__(params)
        cfg = params["strategy"]["replay"]
        self.mem_size = int(cfg["mem_size"])
        if cfg["policy"] == "class_balanced":
            self.policy = ClassBalancedBuffer(max_size=self.mem_size, adaptive_size=True)
        elif cfg["policy"] == "reservoir":
            self.policy = ReservoirSamplingBuffer(max_size=self.mem_size)
        else:
            raise ValueError(f"strategy.replay.policy must be class_balanced or reservoir, not {cfg['policy']!r}")
        mem_batch = int(cfg.get("batch_size_mem") or 0) or None
        self.plugin = GlobalBatchReplay(mem_size=self.mem_size, batch_size_mem=mem_batch, storage_policy=self.policy)

    def plugins(self) -> list:
        return [self.plugin]

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        path = folder / BUFFER_FILE
        if not path.exists():
            return
        rows = read_jsonl(path)  # split on "\n" only: texts may hold U+2028, U+0085 and the like
        if isinstance(self.policy, ClassBalancedBuffer):
            by_label = defaultdict(list)
            for row in rows:
                by_label[context.label2id[row["label"]]].append(row)
            for label_id, group in by_label.items():
                self.policy.buffer_groups[label_id] = self._reservoir(group, len(group), context)
                self.policy.seen_classes.add(label_id)
        else:
            restored = self._reservoir(rows, self.mem_size, context)
            self.policy.buffer, self.policy._buffer_weights = restored.buffer, restored._buffer_weights

    @staticmethod
    def _reservoir(rows: list[dict], size: int, context: RoundContext) -> ReservoirSamplingBuffer:
        rows = sorted(rows, key=lambda r: -r["weight"])  # Avalanche's invariant: weights sorted, descending
        buffer = ReservoirSamplingBuffer(size)
        buffer.buffer = context.dataset([{k: v for k, v in r.items() if k != "weight"} for r in rows])
        buffer._buffer_weights = torch.tensor([r["weight"] for r in rows], dtype=torch.float)
        return buffer

    def _groups(self) -> list:
        if isinstance(self.policy, ClassBalancedBuffer):
            return list(self.policy.buffer_groups.values())
        return [self.policy]

    def memory_rows(self, context: RoundContext) -> list[dict]:
        return [row for group in self._groups() for row in context.rows_of(group.buffer)]

    def save(self, folder: Path, context: RoundContext) -> dict:
        lines = []
        for group in self._groups():
            for row, weight in zip(context.rows_of(group.buffer), group._buffer_weights.tolist()):
                lines.append({**row, "weight": weight})
        write_jsonl(folder / BUFFER_FILE, lines)
        return {"buffer_size": len(lines), **super().save(folder, context)}

"""Data-parallel rounds (``train.processes`` > 1): the torch.distributed side. torch's DistributedDataParallel
averages the gradients (gloo on CPU, NCCL on GPU), and rank 0 alone writes the round.

- ``continual.rounds.launch`` starts the processes under torch.distributed.run; each one (``continual.rounds.rank``)
  joins the process group here (``join``) and runs the round with its device.
- Every rank draws the same global batch of ``train.batch_size`` rows (``SharedBatches``) and trains on its
  share; the loss is scaled so that DDP's mean over ranks is the global batch's mean. So N processes take the
  same optimiser steps as one, up to float summation order.
- EWC's Fisher pass splits its batches across the ranks and all_reduces the sums (``strategies/ewc.py``).
- After training every rank leaves the process group; rank 0 refits the head, evaluates, exports and writes
  the round folder (atomically, as ever), the others exit. Only rank 0's replay buffer is kept.

Avalanche 0.6 does not wrap the model in DDP itself (``DistributedHelper.wrap_model`` exists, but no template
calls it); what it does do under torch.distributed is put a DistributedSampler on every ReplayDataLoader,
which ``strategies/replay.py`` turns off, since batches are shared out here.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def processes(params: dict) -> int:
    """``train.processes``, checked against the batch sizes it splits."""
    n = int(params["train"].get("processes") or 1)
    if n < 1:
        raise ValueError(f"train.processes must be 1 or more, not {n}")
    sizes = {"train.batch_size": int(params["train"]["batch_size"])}
    if "replay" in params["strategy"]["name"]:  # 0 (null): a memory batch as large as the new data's
        sizes["strategy.replay.batch_size_mem"] = int(params["strategy"]["replay"].get("batch_size_mem") or 0)
    for name, size in sizes.items():
        if size % n:
            raise ValueError(f"train.processes: {n} splits each global batch across {n} processes, but {name} is "
                             f"{size}, not a multiple of {n}: make it one (each process takes {name} / {n} rows)")
    return n


def join() -> torch.device:
    """Join the process group torch.distributed.run set up (gloo on CPU, NCCL with one GPU a process); returns this
    rank's device."""
    device = torch.device("cpu")
    if torch.cuda.is_available():
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"train.processes asks for one GPU a process, and this machine has "
                               f"{torch.cuda.device_count()}: set it to that, or to 1")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over the ranks, in place, in one collective."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def mean_over_ranks(value: float, device) -> float:
    """A step's loss over all ranks: each rank's is its share of the global mean, times N, plus the (identical)
    penalties, so the global loss is the ranks' mean."""
    if world() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / world()


class SharedBatches:
    """The global batches of a loader, the same on every rank, and this rank's share of each.

    The batch order is drawn from an RNG state of its own, seeded from the round's seed and swapped in around
    each draw: dropout draws from the global RNG, differently on each rank, and must not move the order. Rank r
    takes rows r, r+N, r+2N, ... of each global batch (DistributedSampler's split, per batch, so a replay batch's
    new and memory rows are both split evenly), cut to its own longest text. With one process it is the loader.
    ``global_size`` and ``own_size`` count the current batch's rows, all and this rank's.
    """

    def __init__(self, loader, seed: int, pad_token_id: int):
        self.loader, self.pad_token_id, self.global_size, self.own_size = loader, pad_token_id, 0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.rng = torch.get_rng_state()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = None
        while True:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self.rng)
                batches = iter(self.loader) if batches is None else batches
                batch = next(batches, None)
                self.rng = torch.get_rng_state()
            if batch is None:
                return
            self.global_size = len(batch[1])
            yield self.share(batch)

    def share(self, batch: list) -> list:
        if world() == 1:
            self.own_size = self.global_size
            return batch
        own = [t[rank()::world()] for t in batch]
        self.own_size = len(own[1])
        if not self.own_size:  # fewer rows than ranks: a stand-in row, weighted 0, keeps this rank in DDP's step
            own = [t[:1] for t in batch]
        width = int((own[0] != self.pad_token_id).any(0).nonzero().max()) + 1
        return [own[0][:, :width], *own[1:]]

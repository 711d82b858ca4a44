"""Online EWC: Avalanche's EWCPlugin (mode="online"), its Fisher estimated on the arrival's train split.

Avalanche computes the importance as squared gradients of each mini-batch loss, averaged over batches (an
empirical Fisher). Its state lives in memory, keyed by experience number; we save the last importance and
parameter snapshot and put them back under the key the next round's penalty reads. The snapshot is the
round's final weights, which model/ already holds, so ewc.safetensors stores the importance alone.

With ``train.processes`` > 1 the Fisher pass is shared out: the same batches as one process (batch_size rows,
in order), batch i on rank i mod N, each rank summing squared gradients of its batches on the plain model (no
DDP hook fires outside a DDP forward), then one all_reduce of the sums. Every rank ends with the importance
over all of the arrival; rank 0 writes it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData, zerolike_params_dict
from safetensors.torch import load_file, save_file

from continual import progress
from continual.model import distributed
from continual.strategies.base import RoundContext
from continual.strategies.finetune import FineTuning

EWC_FILE = "ewc.safetensors"


class DeviceFollowingEWC(EWCPlugin, supports_distributed=True):
    """EWCPlugin whose restored state follows the model to the training device.

    ``EWC.restore`` runs before Avalanche's template exists, so it builds the importances and the anchor
    on the device the model is on then: the CPU. The template moves the model to ``strategy.device`` (cuda
    on a GPU machine) when training starts, and the penalty would then subtract a CPU anchor from CUDA
    weights from round 2 on. Here every stored tensor moves to ``strategy.device`` before the experience
    trains (``before_training_exp`` runs after the template's ``model.to(device)``)."""

    def before_training_exp(self, strategy, **kwargs):
        device = torch.device(strategy.device)
        for store in (self.importances, self.saved_params):
            for params in store.values():
                for data in params.values():
                    if data.data.device != device:
                        data._data = data.data.to(device)  # ParamData has no setter for another device
                    data.device = device  # what ParamData.expand pads with when the head grows
        return super().before_training_exp(strategy, **kwargs)

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, **kwargs):
        """Importance of the trainable parameters only: a LoRA round's frozen encoder gets no gradient, and a
        zero importance for each of its 22M weights would only fill ewc.safetensors and the penalty's loop."""
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        batches = -(-len(dataset) // batch_size)
        mine = -(-batches // distributed.world())  # under torch.distributed, rank 0's share: its bar alone shows
        with progress.bar(total=mine, desc="EWC importance (a backward pass per batch)", unit="batch",
                          disable=bool(distributed.rank())) as shown:
            def counted(*args):  # Avalanche's loop calls the criterion once per batch: one step of the bar
                shown.update(1)
                return criterion(*args)

            if distributed.world() == 1:
                importances = super().compute_importances(model, counted, optimizer, dataset, device, batch_size,
                                                          **kwargs)
            else:
                importances = self._shared_out(model, counted, optimizer, dataset, device, batch_size, **kwargs)
        return {k: v for k, v in importances.items() if k in trainable}

    def _shared_out(self, model, criterion, optimizer, dataset, device, batch_size, **kwargs):
        """EWCPlugin's mean over batches of squared gradients, rank r taking batches r, r+N, ...; the sums are
        all_reduced, so every rank gets one process's result, up to summation order."""
        batches = -(-len(dataset) // batch_size)
        mine = range(distributed.rank(), batches, distributed.world())
        rows = [i for b in mine for i in range(b * batch_size, min(len(dataset), (b + 1) * batch_size))]
        if rows:  # whole batches, in order: a DataLoader over them cuts the same batches as over the arrival
            importances = super().compute_importances(model, criterion, optimizer, dataset.subset(rows), device,
                                                      batch_size, **kwargs)
        else:
            importances = zerolike_params_dict(model)
        sums = [importances[name].data for name, param in model.named_parameters() if param.requires_grad]
        for total in sums:
            total.mul_(len(mine))  # EWCPlugin divided by this rank's batches: back to sums
        distributed.all_reduce_sum(sums)
        for total in sums:
            total.div_(batches)
        return importances

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        counter = strategy.clock.train_exp_counter  # the anchor too: only what has an importance
        self.saved_params[counter] = {k: v for k, v in self.saved_params[counter].items()
                                      if k in self.importances[counter]}


class EWC(FineTuning):
    name = "ewc"

    def __init__(self, params: dict):
        super().__init__(params)
        cfg = params["strategy"]["ewc"]
        self.plugin = DeviceFollowingEWC(ewc_lambda=float(cfg["lambda"]), mode="online", decay_factor=float(cfg["decay"]))
        self.past_rounds = 0

    def plugins(self) -> list:
        return [self.plugin]

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        path = folder / EWC_FILE
        if not path.exists():
            return
        tensors = load_file(path)
        past = json.loads((folder / "round.json").read_text())["index"]
        # Online mode reads key (experience counter - 1); the template's counter is set to `past`.
        device = next(model.parameters()).device  # the penalty compares these with the live weights
        # In the model's parameter order: Avalanche's online update zips old and new importances by position.
        for name, weights in model.named_parameters():
            importance = tensors.get(f"importance:{name}")
            if importance is None:
                continue
            # The anchor is the previous round's final weights: the model this round starts from (a grown
            # head's new rows carry zero importance). Folders written before this change saved a copy.
            anchor = tensors.get(f"param:{name}", weights.detach())
            for kind, value, store in (("importance", importance, self.plugin.importances),
                                       ("param", anchor, self.plugin.saved_params)):
                store[past - 1][name] = ParamData(f"{kind}_{name}", value.shape,
                                                  init_tensor=value.to(device).clone(), device=device)

    def save(self, folder: Path, context: RoundContext) -> dict:
        last = max(self.plugin.importances)
        # Only the importance: the anchor weights are the round's own model (model/), saved beside it.
        tensors = {f"importance:{k}": v.data.cpu().contiguous() for k, v in self.plugin.importances[last].items()}
        save_file(tensors, folder / EWC_FILE, metadata={"mode": "online", "decay": str(self.plugin.decay_factor)})
        return super().save(folder, context)

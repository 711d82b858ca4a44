"""O-LoRA (Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning", EMNLP 2023):
every round trains a new LoRA adapter whose down-projection A is pushed orthogonal to every earlier round's.

Needs ``model.adapter: lora``. Earlier rounds' adapters are kept, frozen and active, not merged into the
encoder: the loss needs their A matrices, and merging would write the encoder's weights into every round
folder, which LoRA rounds exist to avoid. The server still sees one merged model (``adapters.merged``).

The loss is the authors' code's (github.com/cmnfriend/O-LoRA, ``orthogonal_loss``):
``lambda_orth * sum_layers sum_old |A_new A_old^T|`` plus ``lambda_l2 * |new adapter|^2``.
peft 0.21 ships OSF (orthogonal subspace fine-tuning), but OSF trains a low-singular-value subspace of each
full weight matrix and so stores weight-sized tensors: it does not keep a round folder adapter-sized.
"""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from continual.model import adapters
from continual.strategies.finetune import FineTuning


class OrthogonalLoss(SupervisedPlugin, supports_distributed=True):
    def __init__(self, lambda_orth: float, lambda_l2: float):
        super().__init__()
        self.lambda_orth, self.lambda_l2 = lambda_orth, lambda_l2
        self.current = adapters.FIRST

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        orth = l2 = torch.zeros((), device=next(model.parameters()).device)
        for module in model.modules():
            lora_a = getattr(module, "lora_A", None)
            if not isinstance(lora_a, torch.nn.ModuleDict) or self.current not in lora_a:
                continue
            new = lora_a[self.current].weight  # rank x in_features
            for name, old in lora_a.items():
                if name != self.current:
                    orth = orth + (new @ old.weight.detach().T).abs().sum()
            if self.lambda_l2:
                l2 = l2 + new.pow(2).sum() + module.lora_B[self.current].weight.pow(2).sum()
        return self.lambda_orth * orth + self.lambda_l2 * l2

    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss + self.penalty(strategy.model)


class OLoRA(FineTuning):
    name = "olora"

    def __init__(self, params: dict):
        super().__init__(params)
        if adapters.adapter_kind(params) != "lora":
            raise ValueError("strategy olora trains one LoRA adapter per round: set model.adapter: lora")
        cfg = params["strategy"]["olora"]
        self.plugin = OrthogonalLoss(float(cfg["lambda_orth"]), float(cfg["lambda_l2"]))

    def plugins(self) -> list:
        return [self.plugin]

    def prepare_model(self, model: torch.nn.Module, index: int) -> None:
        name = adapters.FIRST if index == 1 else f"round-{index}"
        if name not in adapters.adapter_names(model):
            adapters.attach(model, self.params, name)
        adapters.freeze_all_but(model, name)
        self.plugin.current = name

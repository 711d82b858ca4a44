"""What the closed-form strategies share: a frozen encoder, running sums as their only state, a solved head.

A round of ``ncm`` or ``ridge`` costs one forward pass over the arrival: its features are added to sums kept
in safetensors in the round folder, and the head is solved from the sums. Nothing is trained, so nothing is
forgotten, and no text is stored.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from continual.strategies.base import RoundContext, Strategy


def padded(old: torch.Tensor | None, rows: int, columns: int) -> torch.Tensor:
    """A running sum padded with zeros to [rows x columns] (new classes arrive as new columns)."""
    grown = torch.zeros(rows, columns, dtype=torch.float64)
    if old is not None:
        grown[: old.shape[0], : old.shape[1]] = old
    return grown


class ClosedForm(Strategy):
    closed_form = True
    state_file = "sums.safetensors"

    def __init__(self, params: dict):
        super().__init__(params)
        self.sums: dict[str, torch.Tensor] = {}

    def restore(self, folder: Path, context: RoundContext, model: torch.nn.Module) -> None:
        path = folder / self.state_file
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: round {folder.name} was not a {self.name} round, so its "
                                    f"sums cannot be continued. Rerun the stream from round 1 with this strategy.")
        self.sums = load_file(path)

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

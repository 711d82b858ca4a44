"""How strongly the EWC penalty binds: sum of F * (theta_new - theta_old)^2 between two rounds of a workspace.

    python benchmarks/ewc_scale.py demo 0003-amazon 0004-nyt

The penalty a round trains under is strategy.ewc.lambda times this sum (for the drift the round ended with).
"""
import sys

import torch
from safetensors.torch import load_file

from continual.model.encoder import load_classifier
from continual.workspace.layout import Workspace


def main(root: str, before: str, after: str) -> None:
    ws = Workspace.at(root)
    state = load_file(ws.round_dir(before) / "ewc.safetensors")
    live, anchor = ({f"model.{name}": p.detach() for name, p in load_classifier(ws.round_dir(key) / "model")[0]
                     .named_parameters()} for key in (after, before))
    total, importances = 0.0, []
    for key, importance in state.items():
        if not key.startswith("importance:"):
            continue
        name = key.split(":", 1)[1]
        old, new = state.get(f"param:{name}", anchor[name]), live[name]  # older folders saved the anchor
        if old.shape == new.shape:  # a grown head: the new rows carry no penalty
            total += float((importance * (new - old) ** 2).sum())
            importances.append(importance.flatten())
    flat = torch.cat(importances)
    print(f"sum F*dtheta^2 = {total:.3g}; importance mean {float(flat.mean()):.3g}, max {float(flat.max()):.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:4])

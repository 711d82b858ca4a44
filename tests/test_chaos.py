"""Issue 10, "never stuck, nothing lost, nothing wrongly promoted": the parts of the chaos suite
(benchmarks/chaos.py) that fit in `make test`, and a regression test for each defect it found."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from continual.params import load_params
from continual.strategies import RoundContext, make_strategy


# -- EWC on a GPU ------------------------------------------------------------------------------------


def test_restored_ewc_state_follows_the_training_device(tmp_path):
    """restore() builds the importances and anchor on the CPU (the model is there then); Avalanche moves the
    model to strategy.device afterwards, so the state must follow it before the penalty meets it. There is
    no GPU here: 'meta' stands in for cuda, and it is enough that every tensor lands on the device the
    strategy reports."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    save_file({f"importance:{name}": torch.ones_like(p) for name, p in model.named_parameters()},
              tmp_path / "ewc.safetensors")
    (tmp_path / "round.json").write_text(json.dumps({"index": 1}))
    params = load_params()
    params["strategy"]["name"] = "replay+ewc"
    strategy = make_strategy(params)
    (ewc,) = [plugin for plugin in strategy.plugins() if hasattr(plugin, "importances")]
    strategy.restore(tmp_path, RoundContext(None, {}, 8), model)
    stored = [data for store in (ewc.importances, ewc.saved_params) for group in store.values()
              for data in group.values()]
    assert len(stored) == 8 and all(data.data.device.type == "cpu" for data in stored)

    class Template:  # what the plugin reads of Avalanche's template
        device = torch.device("meta")

    ewc.before_training_exp(Template())
    assert all(data.data.device.type == "meta" and data.device.type == "meta" for data in stored)
    grown = stored[0].expand((stored[0].shape[0] + 1, *stored[0].shape[1:]))  # a head that grows pads there too
    assert grown.device.type == "meta"

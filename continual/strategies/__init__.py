"""How a round trains, one file per strategy; ``strategy.name`` in params.yaml picks one from ``STRATEGIES``.

Each strategy owns how its rounds train and what state it keeps beside the model: the hooks a round calls are
in ``base.py``, the two templates in ``finetune.py`` (gradient steps) and ``closed_form.py`` (a solved head),
and a strategy says only what differs (replay's buffer, EWC's penalty, ...).

May import: ``continual.model`` and the layers below it (``continual.arrivals``, ``continual.workspace``, the
root utilities) and ``service``; never ``continual.rounds`` or anything above it.
"""
from __future__ import annotations

from continual.strategies.adapt import Adapt
from continual.strategies.base import RoundContext, RoundInputs, Strategy
from continual.strategies.ewc import EWC
from continual.strategies.joint import Joint
from continual.strategies.naive import Naive
from continual.strategies.ncm import NCM
from continual.strategies.olora import OLoRA
from continual.strategies.replay import Replay
from continual.strategies.replay_ewc import ReplayEWC
from continual.strategies.ridge import Ridge

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Naive, Replay, EWC, ReplayEWC, Joint, NCM, Ridge,
                                                              Adapt, OLoRA)}


def make_strategy(params: dict) -> Strategy:
    name = params["strategy"]["name"]
    if name not in STRATEGIES:
        raise ValueError(f"strategy.name must be one of {', '.join(STRATEGIES)}, not {name!r}")
    return STRATEGIES[name](params)


__all__ = ["STRATEGIES", "RoundContext", "RoundInputs", "Strategy", "make_strategy"]

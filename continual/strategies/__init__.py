"""One file per strategy; `strategy.name` in params.yaml picks one."""
from __future__ import annotations

from continual.strategies.adapt import Adapt
from continual.strategies.base import RoundContext, Strategy
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


__all__ = ["RoundContext", "Strategy", "STRATEGIES", "make_strategy"]

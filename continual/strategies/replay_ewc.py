"""Replay and EWC together: both plugins listed on one template, each part saving its own state."""
from continual.strategies.base import Strategy
from continual.strategies.ewc import EWC
from continual.strategies.replay import Replay


class ReplayEWC(Strategy):
    name = "replay+ewc"
    parts = (Replay, EWC)

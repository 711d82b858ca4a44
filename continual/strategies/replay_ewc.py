"""Replay and EWC together: both plugins listed on one template, each part saving its own state."""
from continual.strategies.ewc import EWC
from continual.strategies.finetune import FineTuning
from continual.strategies.replay import Replay


class ReplayEWC(FineTuning):
    name = "replay+ewc"
    parts = (Replay, EWC)

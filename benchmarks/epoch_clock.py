"""A training plugin for trainer_speed.py: how long the other plugins' end-of-experience work takes."""
from __future__ import annotations

import time

from avalanche.training.plugins import SupervisedPlugin


class EpochClock(SupervisedPlugin):
    """Listed after every other plugin, so the time from the end of the last epoch to the end of the experience
    is what the others' after_training_exp took: EWC's Fisher pass, replay's buffer update."""

    def __init__(self):
        super().__init__()
        self.after_epoch = 0.0
        self._end = 0.0

    def after_training_epoch(self, strategy, **kwargs):
        self._end = time.perf_counter()

    def after_training_exp(self, strategy, **kwargs):
        self.after_epoch = time.perf_counter() - self._end

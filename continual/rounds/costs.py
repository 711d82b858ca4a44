"""What a round's time went on, phase by phase: metrics.json's ``phase_seconds``, MLflow's ``phase_seconds.*``
and ``continual status --costs``."""
from __future__ import annotations

import time
from contextlib import contextmanager

# In the order a round runs them. "train" is the optimiser's epochs alone; "train_setup" is the rest of the
# trainer's call (Avalanche's set-up, data loaders); "after_training" is what plugins do once the epochs end
# (EWC's Fisher pass, the replay buffer's update).
PHASES = ("load", "evaluate_before", "prototypes", "train", "train_setup", "after_training", "head",
          "evaluate", "reference", "export", "quantize", "evaluate_int8", "write")
TRAINING = ("train",)


class Phases:
    """``with phases("load"): ...`` adds the block's seconds to that phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begin)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def ordered(self) -> dict[str, float]:
        return {name: round(self.seconds[name], 3) for name in sorted(self.seconds, key=_position)}


def _position(name: str) -> int:
    return PHASES.index(name) if name in PHASES else len(PHASES)


def format_costs(rounds: list[dict]) -> str:
    """One row per round: seconds per phase, the wall time, and the share of it that was not training."""
    names = [p for p in PHASES if any(p in (r.get("phase_seconds") or {}) for r in rounds)]
    short = {"evaluate_before": "eval_before", "after_training": "after_train", "evaluate_int8": "eval_int8"}
    header = f"{'round':<18} {'strategy':<10} " + " ".join(f"{short.get(n, n):>11}" for n in names) + \
        f" {'wall':>8} {'not_train':>9}"
    lines = [header]
    for r in rounds:
        phases = r.get("phase_seconds") or {}
        wall = r.get("wall_seconds") or 0.0
        trained = sum(phases.get(n, 0.0) for n in TRAINING)
        share = f"{(wall - trained) / wall:9.0%}" if wall and phases else f"{'-':>9}"
        lines.append(f"{r['key']:<18} {r['strategy']:<10} "
                     + " ".join(f"{phases[n]:>11.2f}" if n in phases else f"{'-':>11}" for n in names)
                     + f" {wall:>8.1f} {share}")
    return "\n".join(lines)

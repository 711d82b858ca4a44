"""The promotion gate (``promotion`` in params.yaml): may a round's model replace the champion?

The gate compares like with like: the average accuracy is taken over the arrivals that both the
candidate and the champion were measured on. The champion's measurements are the ``acc.<arrival>``
metrics of its round run, plus, when the champion is the candidate's parent round, its accuracy on the
new arrival (the candidate's ``acc_before_update`` is exactly that).

``decide`` is pure; ``int8_check`` reads the round's quantization report, judged as the server judges it.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any

from continual.workspace.layout import Workspace
from service.backends import int8_verdict, read_quantization_report

TOLERANCE = 1e-9  # 0.81 - 0.71 is 0.10000000000000009: a forgetting of exactly the bound must pass


@dataclass(frozen=True)
class Gate:
    max_avg_acc_drop: float
    max_forgetting: float
    min_new_acc: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Gate":
        return cls(**params["promotion"])


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reasons: list[str]  # one per check, each starting with 'ok: ' or 'refused: '
    skipped: str = ""  # why the alias was not moved whatever the verdict (a DVC experiment), else ""


def decide(candidate: dict[str, Any], champion_acc: dict[str, float] | None, gate: Gate) -> Decision:
    """The gate, pure: ``candidate`` is a round's metrics.json, ``champion_acc`` the champion's accuracy
    per arrival (None: no champion yet, so only the forgetting bound and the new-arrival floor apply)."""
    checks: list[tuple[bool, str]] = []
    new_key = candidate["key"]
    new_acc = candidate["acc"][new_key]
    checks.append((new_acc >= gate.min_new_acc - TOLERANCE,
                   f"accuracy on the new arrival {new_key} {new_acc:.3f}, floor {gate.min_new_acc:.3f}"))
    forgetting = candidate.get("forgetting") or {}
    if forgetting:
        worst = max(forgetting, key=forgetting.get)
        checks.append((forgetting[worst] <= gate.max_forgetting + TOLERANCE,
                       f"largest forgetting {forgetting[worst]:.3f} (on {worst}), bound {gate.max_forgetting:.3f}"))
    if champion_acc:
        common = [k for k in champion_acc if k in candidate["acc"]]
        # No arrival in common (a champion from another stream): fall back to the overall averages.
        ours = fmean([candidate["acc"][k] for k in common]) if common else candidate["avg_acc"]
        theirs = fmean([champion_acc[k] for k in common]) if common else fmean(list(champion_acc.values()))
        checks.append((theirs - ours <= gate.max_avg_acc_drop + TOLERANCE,
                       f"avg accuracy {ours:.3f} against the champion's {theirs:.3f} on {len(common)} common"
                       f" arrivals, allowed drop {gate.max_avg_acc_drop:.3f}"))
    return Decision(all(ok for ok, _ in checks), [("ok: " if ok else "refused: ") + text for ok, text in checks])


def int8_check(ws: Workspace, key: str, params: dict[str, Any]) -> str:
    """The int8 graph against fp32 on every arrival's test split: "passed: ...", "failed: ..." or "missing: ..."."""
    report = read_quantization_report(ws.round_dir(key) / "model")
    return int8_verdict(report, float(params["serving"]["max_quantized_drop"]))[1]

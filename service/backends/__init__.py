"""How the served model computes. One process loads one backend:

    torch      the round's safetensors through torch and transformers (service.backends.pytorch)
    onnx       the round's ONNX graph (encoder, pooling, head; fp32) on onnxruntime (service.backends.onnxrt)
    onnx-int8  the same graph with int8 weights, dynamically quantized by onnxruntime
    auto       onnx-int8 when the promotion gate passed it (within serving.max_quantized_drop of fp32 on every
               arrival's test split), else onnx, else torch

The ONNX path imports neither torch nor transformers: a worker starts in about a second. Every backend
answers with the same ``Prediction`` list, so batching, hot swap, V2, /predict and /metrics do not care
which one runs.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from service.model_source import ModelCard

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx-int8", "onnx", "torch")
ONNX_DIR = "onnx"                    # inside a pooled classifier folder (a round's model/)
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
EMBEDDING_OUTPUT = "sentence_embedding"     # the graph's second output: the pooled embedding (graphs exported since monitoring)
QUANTIZATION_REPORT = "quantization.json"  # fp32 and int8 accuracy per arrival, written by the round
PLATFORMS = {"torch": "pytorch_huggingface", "onnx": "onnxruntime_onnx", "onnx-int8": "onnxruntime_onnx"}
TORCH_STACK = ("torch", "transformers", "safetensors")  # the torch backend's own packages: continual-serve[torch]


class BackendUnavailable(RuntimeError):
    """The chosen backend's libraries are not installed in this environment."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: list[float]  # in the order of the model's labels
    truncated: bool             # the text had more tokens than max_length; the rest was not read
    # The pooled sentence embedding the head read (numpy float32 [dim]) when the backend has it: what the drift
    # monitor compares with the champion's reference. Never part of a response.
    embedding: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class BackendChoice:
    name: str    # torch | onnx | onnx-int8
    reason: str  # why this one: shown in the log, on /v2/models/{name} and on /


class ServedModel(Protocol):
    labels: list[str]
    card: "ModelCard"
    max_length: int
    backend: BackendChoice
    reference: Any  # service.monitoring.reference.Reference stored with the model, or None (set by the holder)

    def predict(self, texts: list[str], batch_size: int) -> list[Prediction]:
        """One Prediction per text, in order, ``batch_size`` texts per forward pass."""


def onnx_file(model_dir: Path, backend: str) -> Path:
    return Path(model_dir) / ONNX_DIR / ONNX_FILES[backend]


def read_quantization_report(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / ONNX_DIR / QUANTIZATION_REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def int8_verdict(report: dict[str, Any] | None, max_drop: float) -> tuple[bool, str]:
    """(passed, why): the int8 model may score at most ``max_drop`` below fp32 on each arrival and on average.

    The one definition of the check: the promotion gate records it on the model version, and a server
    given a bare folder (no gate ran) applies it to the folder's own report."""
    if not report or not report.get("int8") or not report.get("fp32"):
        return False, "missing: no int8 accuracy was measured for this model (no ONNX export)"
    fp32, int8 = report["fp32"], report["int8"]
    arrivals = [key for key in fp32 if key in int8]
    if not arrivals:
        return False, "missing: the int8 and fp32 measurements share no arrival"
    drops = {key: fp32[key] - int8[key] for key in arrivals}
    worst = max(drops, key=drops.get)
    average = sum(drops.values()) / len(drops)
    detail = (f"largest drop {drops[worst] * 100:+.1f} points on {worst}, average {average * 100:+.1f} "
              f"over {len(drops)} arrivals, allowed {max_drop * 100:.1f}")
    tolerance = 1e-9  # 0.81 - 0.80 must pass a bound of 0.01
    passed = drops[worst] <= max_drop + tolerance and average <= max_drop + tolerance
    return passed, ("passed: " if passed else "failed: ") + detail


def choose(requested: str, model_dir: Path | None, card: "ModelCard", max_quantized_drop: float) -> BackendChoice:
    """The backend to serve ``model_dir`` with. ``requested`` other than auto is obeyed (a missing file then
    fails the load, and the old model keeps serving)."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if model_dir is None:  # a plain Hugging Face classifier: only torch can read it
        if requested not in ("auto", "torch"):
            raise FileNotFoundError(f"backend {requested}: this model has no ONNX graph (not a continual round)")
        return BackendChoice("torch", "a plain Hugging Face classifier: torch only")
    if requested != "auto":
        if requested == "onnx-int8" and card.int8_gate and not card.int8_gate.startswith("passed"):
            log.warning("serving int8 as configured although the gate did not pass it: %s", card.int8_gate)
        return BackendChoice(requested, "configured (serving backend)")
    has_int8, has_fp32 = onnx_file(model_dir, "onnx-int8").is_file(), onnx_file(model_dir, "onnx").is_file()
    if card.int8_gate is not None:
        passed, why = card.int8_gate.startswith("passed"), f"the promotion gate's int8 check {card.int8_gate}"
    else:
        passed, why = int8_verdict(read_quantization_report(model_dir), max_quantized_drop)
        why = f"int8 check of the folder's own report (no gate verdict) {why}"
    if passed and has_int8:
        return BackendChoice("onnx-int8", f"auto: {why}")
    if has_fp32:
        return BackendChoice("onnx", f"auto: fp32 ONNX, since int8 is not served: {why}" if has_int8
                             else "auto: fp32 ONNX (this model has no int8 graph)")
    return BackendChoice("torch", "auto: this model has no ONNX graph (exported before ONNX, or export off)")

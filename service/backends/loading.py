"""Load a model with the chosen backend, importing only that backend's libraries (torch or onnxruntime)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.backends import TORCH_STACK, BackendChoice, BackendUnavailable, ServedModel

if TYPE_CHECKING:
    from service.model_source import ModelCard


def load(choice: BackendChoice, model_dir: Path, tokenizer_dir: Path, card: ModelCard, max_length: int,
         threads: int) -> ServedModel:
    """Import only the chosen backend's libraries and load the model with it."""
    if choice.name == "torch":
        try:
            from service.backends.pytorch import LoadedClassifier
        except ModuleNotFoundError as error:
            if error.name not in TORCH_STACK:
                raise
            raise BackendUnavailable(
                f"backend torch ({choice.reason}) needs {error.name}, which this install does not have: the "
                f"continual-serve install serves ONNX graphs only. Serve a model exported with ONNX graphs "
                f"(backend onnx-int8 or onnx), or install 'continual-serve[torch]'") from error

        return LoadedClassifier.load(model_dir, tokenizer_dir, card, max_length, choice, threads)
    from service.backends.onnxrt import OnnxClassifier

    return OnnxClassifier.load(model_dir, card, max_length, choice, threads)

"""LoRA rounds (``model.adapter: lora``): the base encoder stays frozen, each round trains low-rank adapters
(peft) and the head, and the round folder keeps only those.

A LoRA round's ``model/`` holds what a full round's does, minus the encoder weights:

    adapter_config.json, adapter_model.safetensors   peft's adapter (one per round under olora: round-N/)
    base.json                                        which base model the adapters attach to
    classifier.json, head.safetensors, tokenizer     as in every round (service.pooled)

Nothing downstream of the round sees adapters: ``merged`` folds them into a plain encoder
(peft's ``merge_and_unload``) for the ONNX export, the MLflow model version and so the server.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from continual.model.pretrained import base_model_path
from service.pooled import PooledClassifier, load_encoder

ADAPTERS = ("none", "lora")
ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "base.json"
FIRST = "default"  # peft's name for the first adapter; later rounds' adapters (olora) are named round-N


def adapter_kind(params: dict) -> str:
    kind = params["model"].get("adapter", "none")
    if kind not in ADAPTERS:
        raise ValueError(f"model.adapter must be one of {', '.join(ADAPTERS)}, not {kind!r}")
    return kind


def train_settings(params: dict) -> dict:
    """The ``train`` section, with ``model.lora.lr`` as the encoder's learning rate in a LoRA round: adapters
    start at zero and need a larger step than full fine-tuning's."""
    if adapter_kind(params) == "none":
        return params["train"]
    return {**params["train"], "lr": float(params["model"]["lora"]["lr"])}


def for_training(model: PooledClassifier, params: dict) -> None:
    """Gradient checkpointing on the frozen encoder when ``model.lora.gradient_checkpointing`` (transformers' own:
    each layer's activations are recomputed in the backward pass; non-reentrant, so frozen inputs need no
    ``requires_grad`` trick). Only in training mode: evaluation and export run the plain forward."""
    if adapter_kind(params) == "lora" and params["model"]["lora"].get("gradient_checkpointing"):
        model.encoder.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})


def check_parent(parent: Path, kind: str) -> None:
    """Refuse to continue a round trained with another ``model.adapter``: its weights are not this round's kind.

    ``dvc repro`` never gets here: ``model`` is a parameter of every round, so changing it reruns the stream."""
    info = json.loads((parent / "round.json").read_text())
    before = info.get("params", {}).get("model", {}).get("adapter", "none")
    if before != kind:
        raise ValueError(
            f"model.adapter is {kind!r} but round {info['key']} ({parent}) was trained with {before!r}: a stream keeps "
            f"one adapter kind. Set model.adapter back to {before!r}, or retrain the stream from its first round "
            f"with the new kind (`dvc repro` does so by itself: model is a parameter of every round)")


def linear_names(encoder: torch.nn.Module) -> list[str]:
    """The names peft's ``target_modules`` can match: the last part of every Linear layer's name (a layer peft
    already wraps counts under its own name, not its parts')."""
    names = set()
    for name, module in encoder.named_modules():
        parts = name.split(".")
        if any(part == "base_layer" or part.startswith("lora_") for part in parts):
            continue
        if isinstance(module, torch.nn.Linear) or isinstance(getattr(module, "base_layer", None), torch.nn.Linear):
            names.add(parts[-1])
    return sorted(names)


def lora_config(params: dict, encoder: torch.nn.Module):
    """peft's LoraConfig from ``model.lora``; refuses target modules the encoder does not have, naming those it has."""
    from peft import LoraConfig

    settings = params["model"]["lora"]
    targets = list(settings["target_modules"])
    valid = linear_names(encoder)
    unknown = [name for name in targets if name not in valid]
    if unknown or not targets:
        raise ValueError(f"model.lora.target_modules: {', '.join(map(repr, unknown)) or 'empty'} "
                         f"{'is' if len(unknown) == 1 else 'are'} not a Linear layer of this encoder; "
                         f"the valid names are: {', '.join(valid)}")
    return LoraConfig(r=int(settings["rank"]), lora_alpha=float(settings["alpha"]),
                      lora_dropout=float(settings["dropout"]), target_modules=targets, bias="none")


def attach(model: PooledClassifier, params: dict, name: str = FIRST) -> None:
    """Wrap the encoder in peft with a fresh adapter ``name`` (or add ``name`` beside the loaded ones).

    peft freezes every base weight; only adapters (and the head, outside the encoder) train."""
    from peft import PeftModel, get_peft_model

    if isinstance(model.encoder, PeftModel):
        model.encoder.add_adapter(name, lora_config(params, model.encoder.get_base_model()))
    else:
        model.encoder = get_peft_model(model.encoder, lora_config(params, model.encoder), adapter_name=name)


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_names(model: PooledClassifier) -> list[str]:
    return list(getattr(model.encoder, "peft_config", {}))


def save(model: PooledClassifier, folder: Path, base: str) -> None:
    """Adapters, head and ``base.json``; no encoder weight (``PooledClassifier.save`` on a peft encoder)."""
    model.save(folder)
    (folder / "README.md").unlink(missing_ok=True)  # peft's model-card stub, empty of facts
    (folder / BASE_FILE).write_text(json.dumps({"base": base, "adapters": adapter_names(model)}, indent=2) + "\n")


def load(folder: str | Path, trainable: bool = True) -> PooledClassifier:
    """A LoRA round's classifier: the base encoder named in base.json with every adapter of the folder."""
    from peft import PeftModel

    folder = Path(folder)
    info = json.loads((folder / BASE_FILE).read_text())
    encoder = PeftModel.from_pretrained(load_encoder(base_model_path(info["base"])), folder, adapter_name=FIRST,
                                        is_trainable=trainable)
    for name in info["adapters"]:
        if name != FIRST:
            encoder.load_adapter(folder / name, adapter_name=name, is_trainable=trainable)
    encoder.base_model.set_adapter(info["adapters"])  # all of them act, as when they were saved
    if not trainable:
        encoder.requires_grad_(False)
    return PooledClassifier.load(folder, encoder=encoder)


def freeze_all_but(model: PooledClassifier, name: str) -> None:
    """Every adapter acts in the forward pass; only ``name`` (and the head) receives gradients."""
    model.encoder.base_model.set_adapter(adapter_names(model))
    for param_name, param in model.encoder.named_parameters():
        param.requires_grad = f".{name}." in param_name


def merged(model: PooledClassifier) -> PooledClassifier:
    """A copy with every adapter folded into the encoder's weights: a plain classifier of today's format."""
    from peft import PeftModel

    if not isinstance(model.encoder, PeftModel):
        return model
    copied = copy.deepcopy(model)
    copied.encoder = copied.encoder.merge_and_unload(adapter_names=adapter_names(copied))
    return copied.eval()

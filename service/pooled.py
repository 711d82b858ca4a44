"""The classifier every round writes and every server loads: an encoder, pooled the way it was trained, and a
linear head.

A folder of this format holds the encoder as Hugging Face writes it (config.json, model.safetensors,
tokenizer files), plus:

    classifier.json    {"format", "pooling", "normalize", "max_length", "labels"}: how to read the encoder (and
                       how many tokens it was trained to read), what the head's rows mean
    head.safetensors   weight [labels x features], bias [labels], and optionally projection [dim x features]

No pickles and no remote code: torch, transformers and safetensors load it anywhere. Training
(``continual``) and serving (``service``, MLflow's pyfunc) import this one module, so the three produce the
same probabilities from the same weights.

``AutoModelForSequenceClassification`` reads BERT's CLS token through its ``pooler``, but sentence encoders
such as all-MiniLM-L6-v2 were trained for mean pooling (their ``1_Pooling/config.json``): a probe on the
CLS pooler output scores far lower than one on mean-pooled tokens, which is why this is not a HF head.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "continual.pooled-classifier/1"
CLASSIFIER_FILE = "classifier.json"
HEAD_FILE = "head.safetensors"
POOLING_MODES = ("mean", "cls", "max")


class LegacyModelFolder(ValueError):
    """A folder written before the pooled classifier (a CLS-pooler sequence classifier)."""


def is_pooled_folder(folder: str | Path) -> bool:
    return (Path(folder) / CLASSIFIER_FILE).is_file()


def sentence_transformers_pooling(folder: str | Path) -> tuple[str, bool]:
    """(pooling mode, normalise?) from a sentence-transformers folder's modules.json; ("mean", False) if none.

    Mean pooling is the default because a plain encoder's CLS token was never trained as a sentence summary.
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = json.loads(modules_file.read_text())
    mode, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            config = json.loads((folder / module.get("path", "") / "config.json").read_text())
            chosen = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}_token" if m == "cls"
                                                              else f"pooling_mode_{m}_tokens")]
            if len(chosen) != 1:
                raise ValueError(f"{folder}: pooling {config} is not one of {', '.join(POOLING_MODES)}")
            mode = chosen[0]
        elif kind.endswith("Normalize"):
            normalize = True
    return mode, normalize


class PooledClassifier(torch.nn.Module):
    """``forward(input_ids, attention_mask) -> logits``: encoder, pooling, optional L2 norm, optional fixed
    random projection with ReLU (RanPAC), then a linear head whose rows are ``labels`` in order."""

    def __init__(self, encoder: torch.nn.Module, labels: list[str], pooling: str = "mean", normalize: bool = False,
                 projection: torch.Tensor | None = None, max_length: int = 128):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, not {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.labels = list(labels)
        self.max_length = int(max_length)
        self.register_buffer("projection", projection, persistent=False)
        width = projection.shape[1] if projection is not None else self.embedding_dim
        self.head = torch.nn.Linear(width, len(self.labels))

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled (and, if the encoder was trained so, normalised) sentence embedding."""
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "mean":
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        elif self.pooling == "max":
            pooled = tokens.masked_fill(mask == 0, torch.finfo(tokens.dtype).min).max(1).values
        else:
            pooled = tokens[:, 0]
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def features(self, embedding: torch.Tensor) -> torch.Tensor:
        """What the head reads: the embedding, or ReLU of its fixed random projection."""
        return embedding if self.projection is None else torch.relu(embedding @ self.projection)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.head(self.features(self.embed(input_ids, attention_mask)))

    # -- the folder ------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.encoder.save_pretrained(folder, safe_serialization=True)
        tensors = {"weight": self.head.weight.detach().cpu().contiguous(),
                   "bias": self.head.bias.detach().cpu().contiguous()}
        if self.projection is not None:
            tensors["projection"] = self.projection.detach().cpu().contiguous()
        save_file(tensors, folder / HEAD_FILE)
        card = {"format": FORMAT, "pooling": self.pooling, "normalize": self.normalize,
                "max_length": self.max_length, "labels": self.labels}
        (folder / CLASSIFIER_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, encoder: torch.nn.Module | None = None) -> "PooledClassifier":
        """The classifier in ``folder``; ``encoder`` replaces the folder's own (a LoRA round's folder holds
        adapters and the head only: ``continual.model.adapters`` builds its encoder from the base model)."""
        folder = Path(folder)
        if not is_pooled_folder(folder):
            raise LegacyModelFolder(
                f"{folder} has no {CLASSIFIER_FILE}: it was written before continual pooled its encoder the way the "
                f"encoder was trained (a CLS-pooler classifier). Loading it would silently use the wrong pooling. "
                f"Retrain the stream from round 1 (`dvc repro --force`), or serve it as a plain Hugging Face classifier.")
        card = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        if card.get("format") != FORMAT:
            raise ValueError(f"{folder / CLASSIFIER_FILE}: format {card.get('format')!r}, expected {FORMAT!r}")
        tensors = load_file(folder / HEAD_FILE)
        model = cls(encoder if encoder is not None else load_encoder(folder), card["labels"], card["pooling"],
                    bool(card["normalize"]), tensors.get("projection"), int(card["max_length"]))
        model.head.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
        return model.eval()


@torch.inference_mode()
def predict_proba(model: PooledClassifier, tokenizer, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Softmax probabilities [texts x labels], texts truncated to the tokens the model was trained to read."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=model.max_length,
                          padding=True, return_tensors="pt").to(device)
        out.append(torch.softmax(model(batch["input_ids"], batch["attention_mask"]).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, len(model.labels))


def load_encoder(folder: str | Path) -> torch.nn.Module:
    """The encoder at ``folder``. BERT-style encoders carry a CLS ``pooler`` layer that this classifier never
    reads: it is left out, so it is neither trained nor saved."""
    from transformers import AutoModel

    config = json.loads((Path(folder) / "config.json").read_text())
    if config.get("model_type") in ("bert", "roberta", "xlm-roberta", "camembert", "mpnet"):
        return AutoModel.from_pretrained(folder, add_pooling_layer=False)
    return AutoModel.from_pretrained(folder)

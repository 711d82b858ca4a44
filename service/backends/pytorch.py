"""The torch backend: tokenizer + classifier + its card, and a batched forward pass.

The classifier is a pooled classifier folder (``service.pooled``: what every training round writes) or, for
models trained elsewhere, any plain Hugging Face sequence-classification folder.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from service.backends import BackendChoice, Prediction
from service.model_source import ModelCard
from service.pooled import PooledClassifier, is_pooled_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a served model never reaches for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust pool fights gunicorn's fork

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()


class LoadedClassifier:
    def __init__(self, model, tokenizer, card: ModelCard, max_length: int,
                 backend: BackendChoice = BackendChoice("torch", "configured")):
        self.model = model.eval()
        self.backend = backend
        self.tokenizer = tokenizer
        self.card = card
        self.pooled = isinstance(model, PooledClassifier)
        if self.pooled:  # it reads no more tokens than it was trained on, so predictions match training's
            self.labels = list(model.labels)
            limits = [max_length, model.max_length, getattr(model.encoder.config, "max_position_embeddings", None),
                      tokenizer.model_max_length]
        else:
            self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
            limits = [max_length, getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
        self.max_length = min(limit for limit in limits if isinstance(limit, int) and limit > 0)
        # A fast tokenizer's truncation/padding state lives in Rust and raises "Already borrowed" when
        # two threads set it at once; the forward pass itself is safe to share.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path, tokenizer_dir: Path, card: ModelCard, max_length: int,
             backend: BackendChoice = BackendChoice("torch", "configured"), threads: int = 0) -> "LoadedClassifier":
        if threads > 0:
            torch.set_num_threads(threads)  # per process: every worker of a server sets its own
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if is_pooled_folder(model_dir):
            model = PooledClassifier.load(model_dir)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        return cls(model, tokenizer, card, max_length, backend)

    def predict(self, texts: list[str], batch_size: int) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(texts), batch_size):
            results.extend(self._predict_batch(texts[start:start + batch_size]))
        return results

    @torch.inference_mode()
    def _predict_batch(self, texts: list[str]) -> list[Prediction]:
        with self._tokenizer_lock:
            # padding=True pads to the longest text of this batch, not to max_length.
            batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt")
            truncated = self._truncated(texts, batch)
        embeddings = [None] * len(texts)
        if self.pooled:
            embedding = self.model.embed(batch["input_ids"], batch["attention_mask"])
            logits = self.model.head(self.model.features(embedding))
            embeddings = embedding.float().numpy()
        else:
            inputs = {key: value for key, value in batch.items()
                      if key in ("input_ids", "attention_mask", "token_type_ids")}
            logits = self.model(**inputs).logits
        probabilities = torch.softmax(logits.float(), dim=-1)
        best = probabilities.argmax(dim=-1).tolist()
        return [
            Prediction(self.labels[index], row, cut, embedding)
            for index, row, cut, embedding in zip(best, probabilities.tolist(), truncated, embeddings)
        ]

    def _truncated(self, texts: list[str], batch) -> list[bool]:
        if batch.encodings is not None:  # fast tokenizers keep what they cut off
            return [bool(encoding.overflowing) for encoding in batch.encodings]
        full = self.tokenizer(texts, truncation=False)["input_ids"]
        return [len(ids) > self.max_length for ids in full]

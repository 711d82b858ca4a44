"""The ONNX backends (fp32 and int8): onnxruntime and the Rust tokenizer, no torch and no transformers.

Reads a pooled classifier folder (``service.pooled``): ``onnx/model.onnx`` or ``onnx/model.int8.onnx`` (input_ids and
attention_mask in, logits out, dynamic batch and sequence axes), ``tokenizer.json``, and ``classifier.json`` for
the labels and the number of tokens the model was trained to read. The tokenizer is set up as the torch backend's
``AutoTokenizer(..., truncation=True, max_length=..., padding=True)`` calls it: tests hold the two to the same ids.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust pool fights gunicorn's fork
# onnxruntime (1.32 on Linux) otherwise starts its telemetry: a device id and an event database under ~/.cache.
# The server writes only where it is told to (a read-only root file system has no home to write to).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from service.backends import EMBEDDING_OUTPUT, BackendChoice, Prediction, onnx_file  # noqa: E402
from service.model_source import ModelCard  # noqa: E402


class OnnxClassifier:
    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: Tokenizer, labels: list[str], card: ModelCard,
                 max_length: int, backend: BackendChoice):
        self.session = session
        self.tokenizer = tokenizer
        self.labels = labels
        self.card = card
        self.max_length = max_length
        self.backend = backend
        self._inputs = {i.name for i in session.get_inputs()}
        # Graphs exported since monitoring also output the pooled embedding (continual.rounds.export); older ones only logits.
        self._outputs = [name for name in ("logits", EMBEDDING_OUTPUT) if name in {o.name for o in session.get_outputs()}]
        self._tokenizer_lock = threading.Lock()  # truncation/padding state is shared; set once, read under a lock

    @classmethod
    def load(cls, model_dir: Path, card: ModelCard, max_length: int, backend: BackendChoice,
             threads: int = 0) -> "OnnxClassifier":
        model_dir = Path(model_dir)
        path = onnx_file(model_dir, backend.name)
        if not path.is_file():
            raise FileNotFoundError(f"backend {backend.name}: {path} does not exist (the round exported no ONNX "
                                    f"graph: export.onnx off, or a round from before ONNX export)")
        card_file = json.loads((model_dir / "classifier.json").read_text(encoding="utf-8"))
        limits = [max_length, card_file.get("max_length"), _json(model_dir / "config.json").get("max_position_embeddings"),
                  _json(model_dir / "tokenizer_config.json").get("model_max_length")]
        length = min(limit for limit in limits if isinstance(limit, int) and limit > 0)
        return cls(session(path, threads), tokenizer(model_dir, length), list(card_file["labels"]), card, length, backend)

    def predict(self, texts: list[str], batch_size: int) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(texts), batch_size):
            results.extend(self._predict_batch(texts[start:start + batch_size]))
        return results

    def _predict_batch(self, texts: list[str]) -> list[Prediction]:
        with self._tokenizer_lock:
            encodings = self.tokenizer.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        outputs = self.session.run(self._outputs, {k: v for k, v in feed.items() if k in self._inputs})
        logits = outputs[0].astype(np.float64)
        embeddings = outputs[1] if len(outputs) > 1 else [None] * len(texts)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        return [Prediction(self.labels[index], row.astype(np.float32).tolist(), bool(encoding.overflowing), embedding)
                for index, row, encoding, embedding in zip(best, probabilities, encodings, embeddings)]


def session(path: Path, threads: int = 0) -> onnxruntime.InferenceSession:
    """One inference session on the CPU; ``threads`` intra-op threads (0: onnxruntime's default, one per core)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads spinning for work would take the cores from the other workers of the server.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    """The folder's fast tokenizer, truncating to ``max_length`` and padding to the longest text of a batch
    (a saved tokenizer.json may carry a fixed padding length: MiniLM's pads everything to 128)."""
    loaded = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    settings = _json(model_dir / "tokenizer_config.json")
    pad_token = settings.get("pad_token") or "[PAD]"
    pad_token = pad_token.get("content", "[PAD]") if isinstance(pad_token, dict) else pad_token
    pad_id = loaded.token_to_id(pad_token)
    if pad_id is None:
        raise ValueError(f"{model_dir}: the pad token {pad_token!r} is not in tokenizer.json")
    loaded.no_padding()
    loaded.enable_truncation(max_length=max_length)
    loaded.enable_padding(pad_id=pad_id, pad_token=pad_token, direction=settings.get("padding_side", "right"))
    return loaded


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


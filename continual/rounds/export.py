"""Every round's classifier also as ONNX: the whole classifier (encoder, pooling, head; logits out, dynamic batch and
sequence axes) in fp32, and an int8 version of it, dynamically quantized by onnxruntime. The int8 model is then
measured on every arrival's test split by the server's own ONNX backend, so the promotion gate judges exactly what
will be served (``service.backends.int8_verdict``).

Written inside the round's model folder, so DVC versions them with the round and MLflow logs them with the model
version (the pyfunc's ``classifier`` artifact):

    model/onnx/model.onnx          fp32 graph (torch.onnx.export, TorchScript exporter)
    model/onnx/model.int8.onnx     onnxruntime.quantization.quantize_dynamic, int8 weights
    model/onnx/quantization.json   accuracy per arrival, fp32 (torch) and int8 (onnxruntime); sizes; settings
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

from continual import progress
from service.backends import EMBEDDING_OUTPUT, ONNX_DIR, QUANTIZATION_REPORT, BackendChoice, onnx_file, read_quantization_report
from service.model_source import ModelCard
from service.monitoring.reference import REFERENCE_FILE
from service.pooled import PooledClassifier

OPSET = 18


class _LogitsAndEmbedding(torch.nn.Module):
    """The classifier with its pooled embedding as a second output, for the server's drift monitor."""

    def __init__(self, model: PooledClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.embed(input_ids, attention_mask)
        return self.model.head(self.model.features(embedding)), embedding


def export_fp32(model: PooledClassifier, tokenizer, path: Path) -> None:
    """The classifier as one ONNX graph: input_ids, attention_mask [batch, sequence] (int64) -> logits [batch, labels]
    and the pooled embedding [batch, dim] (what the head reads; the server's drift monitor compares it).

    torch.onnx's TorchScript exporter: on MiniLM it takes 1.1 s where the dynamo exporter takes 12.9 s, for
    outputs equal to 1e-7 (docs/benchmarks.md, "A round's cost, phase by phase")."""
    model = model.eval().cpu()
    example = tokenizer(["an example text", "a second, longer example text for the sequence axis"], padding=True,
                        return_tensors="pt")
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # deprecation and tracer notes
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(_LogitsAndEmbedding(model), (example["input_ids"], example["attention_mask"]), str(path),
                          dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["logits", EMBEDDING_OUTPUT],
                          dynamic_axes={"input_ids": {v: k for k, v in axes.items()},
                                        "attention_mask": {v: k for k, v in axes.items()},
                                        "logits": {0: "batch"}, EMBEDDING_OUTPUT: {0: "batch"}},
                          opset_version=OPSET, verbose=False)


def quantize_int8(source: Path, target: Path, per_channel: bool) -> None:
    """onnxruntime's dynamic quantization: int8 weights, activations quantized on the fly per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs "consider pre-processing" on the root logger each call; its shape inference and graph
    # optimisations are what onnxruntime applies when the session loads anyway.
    import onnx

    from continual.model.onnx_head import head_node_names

    # The head stays fp32: a few hundred weights per class, and a later round that changes only the head can
    # then swap them in without quantizing again (continual/model/onnx_head.py).
    head = head_node_names(onnx.load(str(source), load_external_data=False).graph)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=per_channel,
                         nodes_to_exclude=head)
    finally:
        root.setLevel(level)


def write_graphs(model: PooledClassifier, tokenizer, model_dir: Path, per_channel: bool,
                 previous: Path | None = None) -> float:
    """``model_dir``/onnx/: the fp32 graph, then its int8 quantization; returns when the fp32 export ended.

    With ``previous`` (a model folder whose graphs have this model's encoder) both graphs are that folder's,
    with this model's head swapped in: no export, no quantization."""
    (Path(model_dir) / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    if previous is not None:
        import onnx

        from continual.model.onnx_head import features_input, replace_head

        features = features_input(onnx.load(str(onnx_file(previous, "onnx")), load_external_data=False).graph)
        for kind in ("onnx", "onnx-int8"):
            replace_head(onnx_file(previous, kind), onnx_file(model_dir, kind), features, model.head.weight,
                         model.head.bias)
        return time.perf_counter()
    export_fp32(model, tokenizer, onnx_file(model_dir, "onnx"))
    exported = time.perf_counter()
    quantize_int8(onnx_file(model_dir, "onnx"), onnx_file(model_dir, "onnx-int8"), per_channel)
    return exported


def export_round_model(model: PooledClassifier, tokenizer, model_dir: Path, tests: dict[str, list[dict]],
                       fp32_acc: dict[str, float], settings: dict, batch_size: int,
                       fp32_predictions: dict[str, list[int]] | None = None, on_int8=None,
                       previous: Path | None = None) -> dict:
    """Export ``model`` (already saved in ``model_dir``), quantize it, measure the int8 graph on every arrival's
    test split, and write the report; returns it. With ``fp32_predictions`` (label ids per test row, as the
    round's evaluation predicted them) it also gives the share of rows where int8 predicts the same.
    ``on_int8(served)`` is called with the loaded int8 graph (the round's reference embeds with it).
    ``previous``: the previous round's model folder; when its graphs were built from this very encoder, only the
    head is swapped in (``continual/model/onnx_head.py``)."""
    from service.backends.onnxrt import OnnxClassifier

    from continual.model.onnx_head import encoder_fingerprint

    folder = Path(model_dir) / ONNX_DIR
    fp32_path, int8_path = onnx_file(model_dir, "onnx"), onnx_file(model_dir, "onnx-int8")
    per_channel = bool(settings.get("int8_per_channel", True))
    begin = time.perf_counter()
    fingerprint = encoder_fingerprint(model)
    reuse = previous if previous is not None and _same_encoder(previous, fingerprint, per_channel) else None
    step = "export: ONNX graphs, fp32 and int8" if reuse is None else "export: the new head into the ONNX graphs"
    with progress.ticking(step):
        exported = write_graphs(model, tokenizer, model_dir, per_channel, reuse)
    quantized = time.perf_counter()
    served = OnnxClassifier.load(model_dir, ModelCard(source=str(model_dir), fingerprint="export"), model.max_length,
                                 BackendChoice("onnx-int8", "export check"), threads=torch.get_num_threads())
    int8_predictions = {key: _predict(served, rows, batch_size, f"int8 check on {key}") for key, rows in tests.items()}
    if on_int8 is not None:
        on_int8(served)
    int8_acc = {key: sum(p == r["label"] for p, r in zip(int8_predictions[key], rows)) / max(len(rows), 1)
                for key, rows in tests.items()}
    report = {
        "fp32": dict(fp32_acc), "int8": int8_acc,
        "drop": {key: fp32_acc[key] - int8_acc[key] for key in int8_acc},
        "agreement": {key: sum(model.labels[i] == p for i, p in zip(fp32_predictions[key], int8_predictions[key]))
                      / max(len(int8_predictions[key]), 1) for key in int8_predictions} if fp32_predictions else None,
        "bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        "sha256": {"fp32": sha256(fp32_path), "int8": sha256(int8_path)},
        "seconds": {"export": exported - begin, "quantize": quantized - exported,
                    "evaluate_int8": time.perf_counter() - quantized},
        "quantization": {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                         "per_channel": per_channel},
        "opset": OPSET,
        "encoder_sha256": fingerprint,
        "head_only": reuse is not None,  # the previous round's graphs with this head swapped in
    }
    (folder / QUANTIZATION_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def export_round(model: PooledClassifier, tokenizer, model_dir: Path, tests: dict[str, list[dict]],
                 fp32_acc: dict[str, float], settings: dict, batch_size: int,
                 fp32_predictions: dict[str, list[int]] | None = None, on_int8=None,
                 previous: Path | None = None) -> dict:
    """``export_round_model`` for any round. A LoRA round's merged model is exported and measured in a scratch
    folder and only the report is kept: its round folder holds no copy of the encoder's weights. The track
    stage rebuilds the same graphs for the model version (``merged_folder``) and checks them by sha256."""
    from continual.model import adapters
    if not adapters.adapter_names(model):
        return export_round_model(model, tokenizer, model_dir, tests, fp32_acc, settings, batch_size, fp32_predictions,
                                  on_int8, previous)
    with tempfile.TemporaryDirectory(prefix="continual-export-") as scratch:
        merged = _save_merged(model, tokenizer, Path(scratch))
        report = export_round_model(merged, tokenizer, Path(scratch), tests, fp32_acc, settings, batch_size,
                                    fp32_predictions, on_int8)
        (Path(model_dir) / ONNX_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(scratch) / ONNX_DIR / QUANTIZATION_REPORT, Path(model_dir) / ONNX_DIR / QUANTIZATION_REPORT)
    return report


def merged_folder(model_dir: Path, target: Path) -> Path:
    """A LoRA round's model as a plain classifier folder, adapters merged (what MLflow registers and servers
    load). When the round measured its int8 graph, the graphs are rebuilt here; the round's report travels
    with them only if they are the same bytes it measured, else the int8 check reads "missing"."""
    from continual.model.encoder import load_classifier

    model, tokenizer = load_classifier(model_dir, trainable=False)
    merged = _save_merged(model, tokenizer, target)
    if (Path(model_dir) / REFERENCE_FILE).is_file():  # the drift monitor's reference travels with the model
        shutil.copy(Path(model_dir) / REFERENCE_FILE, target / REFERENCE_FILE)
    report = read_quantization_report(model_dir)
    if report is None:
        return target
    write_graphs(merged, tokenizer, target, report["quantization"]["per_channel"])
    rebuilt = {"fp32": sha256(onnx_file(target, "onnx")), "int8": sha256(onnx_file(target, "onnx-int8"))}
    if rebuilt == report.get("sha256"):
        shutil.copy(Path(model_dir) / ONNX_DIR / QUANTIZATION_REPORT, target / ONNX_DIR / QUANTIZATION_REPORT)
    else:
        print(f"export: {model_dir}: the rebuilt ONNX graphs differ from those the round measured "
              f"({rebuilt} vs {report.get('sha256')}); the model version is logged without the int8 report, "
              "so it is served in fp32")
    return target


def _save_merged(model: PooledClassifier, tokenizer, folder: Path) -> PooledClassifier:
    """The adapters folded into the encoder, saved in ``folder`` as a plain classifier with its tokenizer."""
    from continual.model import adapters
    merged = adapters.merged(model)
    folder.mkdir(parents=True, exist_ok=True)
    merged.save(folder)
    tokenizer.save_pretrained(folder)
    return merged


def _same_encoder(previous: Path, fingerprint: str, per_channel: bool) -> bool:
    """The previous round's graphs exist, were quantized alike, and were built from the encoder ``fingerprint``."""
    report = read_quantization_report(previous)
    return bool(report and report.get("encoder_sha256") == fingerprint and report.get("opset") == OPSET
                and report["quantization"]["per_channel"] == per_channel
                and onnx_file(previous, "onnx").is_file() and onnx_file(previous, "onnx-int8").is_file())


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _predict(served, rows: list[dict], batch_size: int, desc: str) -> list[str]:
    """The served model's label for each row, in order (batched by length: similar lengths share a batch); one
    batch per call, for the progress bar."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
    labels: list[str] = [""] * len(rows)
    with progress.bar(total=len(rows), desc=desc) as shown:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            for i, prediction in zip(batch, served.predict([rows[i]["text"] for i in batch], batch_size)):
                labels[i] = prediction.label
            shown.update(len(batch))
    return labels

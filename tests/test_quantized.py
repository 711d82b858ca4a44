"""Quantized serving: each round's classifier as fp32 ONNX and int8 ONNX, the int8 check the gate records, and
the server's choice of backend (service.backends)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from continual.rounds.export import export_round_model
from service.backends import BackendChoice, choose, int8_verdict, onnx_file, read_quantization_report
from service.model_source import ModelCard
from service.registry_tags import INT8_GATE_TAG
from helpers import HOSTILE_TEXTS

REPO = Path(__file__).resolve().parents[1]
def card(int8_gate: str | None = None) -> ModelCard:
    return ModelCard(source="test", fingerprint="test", int8_gate=int8_gate)


def test_a_round_folder_gets_fp32_int8_and_a_report(onnx_model_dir):
    report = read_quantization_report(onnx_model_dir)
    assert set(report) >= {"fp32", "int8", "drop", "bytes", "quantization"}
    assert report["bytes"]["int8"] < report["bytes"]["fp32"] / 2  # int8 weights; the tiny model's ids are fp32
    assert 0.0 <= report["int8"]["0001-a"] <= 1.0
    assert report["drop"]["0001-a"] == pytest.approx(report["fp32"]["0001-a"] - report["int8"]["0001-a"])
    for backend in ("onnx", "onnx-int8"):
        assert onnx_file(onnx_model_dir, backend).stat().st_size > 0


def test_onnx_tokenizer_gives_the_ids_transformers_gives(onnx_model_dir):
    """The ONNX backend tokenizes with the Rust tokenizer alone; it must read every text as training did."""
    from transformers import AutoTokenizer

    from service.backends.onnxrt import tokenizer as onnx_tokenizer

    reference = AutoTokenizer.from_pretrained(onnx_model_dir)
    ours = onnx_tokenizer(onnx_model_dir, 64)
    for batch in (HOSTILE_TEXTS[:7], HOSTILE_TEXTS[7:30], HOSTILE_TEXTS[30:],
                  ["x" * 20000, "short", "nul\x00inside", "\x00"]):
        expected = reference(batch, truncation=True, max_length=64, padding=True)
        encodings = ours.encode_batch(batch)
        assert [e.ids for e in encodings] == expected["input_ids"]
        assert [e.attention_mask for e in encodings] == expected["attention_mask"]
        assert [bool(e.overflowing) for e in encodings] == [bool(e.overflowing) for e in expected.encodings]


@pytest.mark.slow
def test_minilm_onnx_and_int8_agree_with_torch(tmp_path):
    """MiniLM with a real head (the ridge head the frozen-encoder strategy fits, on 300 VADER tweets), on 300
    held-out tweets: fp32 ONNX gives torch's argmax on every text, int8 differs on at most 1 in 50.

    Measured 8 of 300 for int8 (onnxruntime dynamic quantization, per-channel) with the shipped head (λ chosen
    from the sums, 1.8 here), 6 of 300 with λ = 10: a sharper head flips more near-ties, and three-way sentiment
    has many. The gate judges what matters, the accuracy int8 loses per arrival. Counted over 300 texts, not 50, so that the rate is what is
    tested, not the luck of one small sample."""
    from continual.model.evaluation import predict_proba
    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path
    from continual.params import load_params
    from continual.strategies.ridge import fit_ridge_head
    from service.backends.onnxrt import OnnxClassifier

    with open(REPO / "data" / "vader" / "tweets.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    train, texts = rows[:300], [r["text"] for r in rows[300:600]]
    labels = sorted({r["label"] for r in train})
    model, tokenizer = new_classifier(base_model_path("minilm"), labels, 128)
    fit_ridge_head(model, tokenizer, train, load_params())  # the frozen-encoder strategy's head, as shipped
    folder = tmp_path / "model"
    model.save(folder)
    tokenizer.save_pretrained(folder)
    export_round_model(model, tokenizer, folder, {}, {}, {"int8_per_channel": True}, 32)

    logits = predict_proba(model, tokenizer, texts, 32).log()
    expected = logits.argmax(-1).tolist()
    assert len(set(expected)) > 1  # a head that answers one class everywhere proves nothing
    top2 = logits.topk(2).values
    clear = [bool(m > 1e-4) for m in top2[:, 0] - top2[:, 1]]  # a tie within float rounding may go either way
    counts = {}
    for backend in ("onnx", "onnx-int8"):
        served = OnnxClassifier.load(folder, card(), 128, BackendChoice(backend, "test"), threads=1)
        got = [labels.index(p.label) for p in served.predict(texts, 32)]
        counts[backend] = sum(a != b and tie_free for a, b, tie_free in zip(got, expected, clear))
    assert counts["onnx"] == 0, counts
    assert counts["onnx-int8"] <= len(texts) * 3 // 100, counts


def test_int8_verdict_per_arrival_and_on_average():
    fp32 = {"a": 0.90, "b": 0.80}
    assert int8_verdict({"fp32": fp32, "int8": {"a": 0.89, "b": 0.80}}, 0.01)[0]  # exactly the bound passes
    ok, why = int8_verdict({"fp32": fp32, "int8": {"a": 0.90, "b": 0.78}}, 0.01)
    assert not ok and why.startswith("failed: ") and "on b" in why  # one arrival over the bound
    assert int8_verdict({"fp32": fp32, "int8": {"a": 0.95, "b": 0.79}}, 0.01)[0]  # int8 may also score higher
    ok, why = int8_verdict({"fp32": fp32, "int8": {"a": 0.90, "b": 0.80}}, -0.001)  # a forced failure
    assert not ok and why.startswith("failed: ")
    for report in (None, {}, {"fp32": fp32, "int8": {}}):
        ok, why = int8_verdict(report, 0.01)
        assert not ok and why.startswith("missing: ")


def test_auto_serves_int8_only_when_the_gate_passed_it(onnx_model_dir, tmp_path):
    assert choose("auto", onnx_model_dir, card("passed: ..."), 0.01).name == "onnx-int8"
    failed = choose("auto", onnx_model_dir, card("failed: largest drop 3.0 points"), 0.01)
    assert failed.name == "onnx" and "failed: largest drop 3.0 points" in failed.reason
    # No gate verdict (a bare folder): the folder's own report against the server's bound.
    assert choose("auto", onnx_model_dir, card(), 1.0).name == "onnx-int8"
    assert choose("auto", onnx_model_dir, card(), -1.0).name == "onnx"
    # What is asked for is served (a missing file then fails the load, and the old model keeps serving).
    assert choose("torch", onnx_model_dir, card("passed: ..."), 0.01) == BackendChoice("torch", "configured (serving backend)")
    assert choose("onnx-int8", onnx_model_dir, card("failed: ..."), 0.01).name == "onnx-int8"
    no_onnx = tmp_path / "plain"
    no_onnx.mkdir()
    assert choose("auto", no_onnx, card("passed: ..."), 0.01).name == "torch"
    assert choose("auto", None, card(), 0.01).name == "torch"  # a plain Hugging Face classifier
    with pytest.raises(FileNotFoundError):
        choose("onnx", None, card(), 0.01)
    with pytest.raises(ValueError):
        choose("tensorrt", onnx_model_dir, card(), 0.01)


def test_the_onnx_path_never_imports_torch_or_transformers(onnx_model_dir):
    """One process, one backend: a worker serving ONNX loads neither torch nor transformers (cold start)."""
    script = (
        "import sys, json\n"
        "from service import create_app\n"
        f"app = create_app({{'model_uri': {str(onnx_model_dir)!r}, 'backend': 'onnx-int8', 'compute_threads': 1}})\n"
        "answer = app.test_client().post('/predict', json={'texts': ['good great fine', 'bad \\u2028 day']})\n"
        "meta = app.test_client().get('/v2/models/classifier').get_json()\n"
        "print(json.dumps({'status': answer.status_code, 'backend': meta['backend'], 'platform': meta['platform'],\n"
        "                  'loaded': sorted(m for m in ('torch', 'transformers') if m in sys.modules)}))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"status": 200, "backend": {"name": "onnx-int8", "reason": "configured (serving backend)"},
                      "platform": "onnxruntime_onnx", "loaded": []}


def test_a_corrupt_onnx_file_in_the_registry_keeps_the_old_model_serving(onnx_model_dir, tmp_path, caplog):
    from service import create_app
    from service.app import shutdown
    from serving import make_registry, move_alias, register_tiny_model

    uri = make_registry(tmp_path / "registry")
    passed = {INT8_GATE_TAG: "passed: test fixture"}
    register_tiny_model(uri, onnx_model_dir, 1, "tweets", name="corrupt", tags=passed)
    broken = tmp_path / "broken"
    shutil.copytree(onnx_model_dir, broken)
    onnx_file(broken, "onnx-int8").write_bytes(b"\x08\x07not an onnx graph" * 1000)
    register_tiny_model(uri, broken, 2, "movies", name="corrupt", alias=None, tags=passed)

    app = create_app({"registered_model": "corrupt", "tracking_uri": uri, "admin_token": "t", "compute_threads": 1})
    client = app.test_client()
    try:
        assert client.get("/v2/models/corrupt").get_json()["backend"]["name"] == "onnx-int8"
        move_alias(uri, "2", name="corrupt")
        reload = client.post("/admin/reload", headers={"Authorization": "Bearer t"})
        assert reload.status_code == 502 and reload.get_json()["serving"]["version"] == "1"
        answer = client.post("/predict", json={"texts": ["still here", "and here"]})
        assert answer.status_code == 200 and answer.get_json()["model"]["version"] == "1"
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'continual_model_reload_failures_total{model_name="corrupt"} 1.0' in metrics
        assert any("failed; still serving 1" in record.getMessage() for record in caplog.records)
    finally:
        shutdown(app)


@pytest.mark.slow
def test_the_gate_records_a_failed_int8_check_and_the_server_falls_back_to_fp32(tmp_path, tiny_model_dir):
    """A real `dvc repro` with the int8 bound forced below zero (int8 would have to beat fp32): the champion is
    promoted on its fp32 merits, its version carries the failed check, `continual status` says so, and the
    server's auto backend serves the fp32 graph and says why."""
    import yaml

    from service import create_app
    from service.app import shutdown
    from helpers import BIN, registry, run, write_arrival

    root = tmp_path / "stream"
    run(tmp_path, BIN / "continual", "init", str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["train"].update(epochs=2, batch_size=16)
    params["serving"]["max_quantized_drop"] = -0.001
    params["tracking"]["registered_model"] = "continual-classifier"  # a name set by hand is used as written
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    arrival = write_arrival(tmp_path / "one.csv", {"neg": "awful terrible", "pos": "lovely great"}, 12, "one")
    run(root, BIN / "continual", "ingest", str(arrival), "--name", "one")
    repro = run(root, BIN / "dvc", "repro")
    assert "int8 (what `continual serve` serves by default, if passed): failed: " in repro.stdout

    report = read_quantization_report(root / "rounds" / "0001-one" / "model")
    assert set(report["int8"]) == {"0001-one"}
    champion = registry(root).get_model_version_by_alias("continual-classifier", "champion")
    assert champion.tags[INT8_GATE_TAG].startswith("failed: ")
    status = run(root, BIN / "continual", "status").stdout
    assert "int8 ONNX of round 0001-one" in status and "failed: " in status

    app = create_app({"registered_model": "continual-classifier", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"})
    try:
        backend = app.test_client().get("/v2/models/continual-classifier").get_json()["backend"]
        assert backend["name"] == "onnx" and "failed: " in backend["reason"]
        assert app.test_client().post("/predict", json={"texts": ["lovely"]}).status_code == 200
    finally:
        shutdown(app)

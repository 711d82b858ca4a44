"""One model, three ways to run it, the same probabilities: the round's evaluation, our Flask server (on torch, and
on the round's fp32 ONNX graph), and ``mlflow.pyfunc.load_model("models:/NAME@champion")`` (what `mlflow models
serve` runs)."""
from __future__ import annotations

import json

import torch

from continual.model.evaluation import predict_proba
from continual.model.encoder import load_classifier
from continual.params import load_params
from continual.rounds.round import run_round
from service import create_app
from service.app import shutdown
from helpers import HOSTILE_TEXTS as TEXTS, build_stream
from serving import make_registry, register_tiny_model


def test_evaluation_server_and_pyfunc_agree_to_1e_5(tmp_path, tiny_model_dir):
    import mlflow

    ws = build_stream(tmp_path / "ws", [["a", "b"]], n_train=10, n_test=4)
    params = load_params()
    params["model"]["base"] = str(tiny_model_dir)
    params["strategy"]["name"] = "naive"
    params["train"].update({"epochs": 1, "batch_size": 8})
    run_round(ws, ws.stream()[0], params)
    model_dir = ws.round_dir(ws.stream()[0]) / "model"
    assert len(TEXTS) == 50

    model, tokenizer = load_classifier(model_dir)
    evaluated = predict_proba(model, tokenizer, TEXTS, batch_size=7)  # other batches, other padding

    uri = make_registry(tmp_path / "registry")
    register_tiny_model(uri, model_dir, 1, "part1", name="equal")
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model("models:/equal@champion")
    frame = pyfunc.predict(TEXTS)
    from_pyfunc = torch.tensor(list(frame["probabilities"]))
    assert list(frame["label"]) == [model.labels[i] for i in evaluated.argmax(-1).tolist()]

    served = {}
    for backend in ("torch", "onnx"):
        app = create_app({"registered_model": "equal", "tracking_uri": uri, "max_text_chars": 100_000,
                          "backend": backend})
        try:
            answer = app.test_client().post("/predict", json={"texts": TEXTS})
            assert answer.status_code == 200, answer.get_data(as_text=True)
            body = json.loads(answer.get_data())
        finally:
            shutdown(app)
        served[backend] = torch.tensor([[p["probabilities"][label] for label in body["labels"]]
                                        for p in body["predictions"]])
        assert body["labels"] == model.labels

    assert torch.allclose(evaluated, from_pyfunc, atol=1e-5, rtol=0), (evaluated - from_pyfunc).abs().max()
    assert torch.allclose(evaluated, served["torch"], atol=1e-5, rtol=0), (evaluated - served["torch"]).abs().max()
    # The ONNX graph: another kernel library, the same model (measured max difference 1e-7 here).
    assert torch.allclose(evaluated, served["onnx"], atol=1e-5, rtol=0), (evaluated - served["onnx"]).abs().max()
    assert evaluated.argmax(-1).unique().numel() > 1  # a model that answers one class everywhere proves little

"""LoRA rounds (model.adapter: lora) with the tiny model: adapters only in the round folder, the previous
adapter continued, one merged model for MLflow, ONNX and the server, and bad settings refused up front."""
import json

import pytest
import torch

from continual.model import adapters
from continual.model.encoder import load_classifier
from continual.rounds.round import run_round
from continual.strategies.olora import OrthogonalLoss
from helpers import build_stream, run_stream, tiny_params

TEXTS = ["apple banana pear 3", "dog cat horse 12", "red blue green 0", "car truck bus 7", "x", "🙂 \u2028 mixed",
         "next\u0085line", "nul\x00byte", "שלום apple", "word " * 4000]  # hostile: NEL, NUL, RTL, 20,000 chars


def lora_params(model_dir, strategy="replay+ewc", **lora):
    params = tiny_params(model_dir, strategy, epochs=6)
    params["model"]["adapter"] = "lora"
    params["model"]["lora"].update(rank=4, alpha=8, lr=1e-2, **lora)
    params["export"]["onnx"] = False
    return params


def logits(model, tokenizer, texts=TEXTS):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(batch["input_ids"], batch["attention_mask"])


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


@pytest.fixture(scope="module")
def lora_stream(tmp_path_factory, tiny_model_dir):
    """Two class-incremental arrivals under replay+ewc with LoRA; records the adapter each round starts from."""
    import continual.strategies.finetune as round_module

    ws = build_stream(tmp_path_factory.mktemp("lora"), [["a", "b"], ["c", "d"]])
    params = lora_params(tiny_model_dir)
    started, real = [], round_module.train_one_experience

    def spy(wrapped, *args, **kwargs):
        started.append(adapter_state(wrapped.model))
        return real(wrapped, *args, **kwargs)

    round_module.train_one_experience = spy
    try:
        metrics = [run_round(ws, key, params) for key in ws.stream()]
    finally:
        round_module.train_one_experience = real
    return ws, params, metrics, started


def test_a_lora_round_folder_holds_adapters_and_head_never_encoder_weights(lora_stream, tiny_model_dir):
    ws, _, metrics, _ = lora_stream
    for key in ws.stream():
        model_dir = ws.round_dir(key) / "model"
        files = {p.name for p in model_dir.rglob("*") if p.is_file()}
        assert {"adapter_model.safetensors", "adapter_config.json", "head.safetensors", "base.json"} <= files
        assert not files & {"model.safetensors", "pytorch_model.bin", "config.json", "model.onnx"}
        assert json.loads((model_dir / "base.json").read_text())["base"] == str(tiny_model_dir)
    folder = sum(p.stat().st_size for p in ws.round_dir("0002-part2").rglob("*") if p.is_file())
    tokenizer = sum((ws.round_dir("0002-part2") / "model" / name).stat().st_size
                    for name in ("tokenizer.json", "tokenizer_config.json"))
    base = (tiny_model_dir / "model.safetensors").stat().st_size
    assert folder - tokenizer < base / 10, (folder, tokenizer, base)  # even the tiny encoder dwarfs a round
    assert metrics[-1]["avg_acc"] >= 0.9, metrics[-1]["accuracy_matrix"]  # the adapters did learn
    assert metrics[-1]["round_bytes"] == folder - len((ws.round_dir("0002-part2") / "metrics.json").read_bytes())
    encoder = sum(p.numel() for p in load_classifier(tiny_model_dir)[0].encoder.parameters())
    assert 0 < metrics[-1]["trainable_params"] < encoder / 20


def test_round_two_continues_from_round_one_adapter_and_the_base_stays_frozen(lora_stream, tiny_model_dir):
    from service.pooled import PooledClassifier

    ws, _, _, started = lora_stream
    first, _ = load_classifier(ws.round_dir("0001-part1") / "model")
    saved = adapter_state(first)
    assert all(torch.equal(started[1][name], saved[name]) for name in saved) and set(started[1]) == set(saved)
    assert not all(torch.equal(started[0][n], saved[n]) for n in saved)  # round 1 did train its adapter
    second, _ = load_classifier(ws.round_dir("0002-part2") / "model")
    base = PooledClassifier.load(tiny_model_dir).encoder.state_dict()
    frozen = second.encoder.get_base_model().state_dict()
    for name, weight in base.items():  # peft keeps each adapted layer's own weight as `<layer>.base_layer.weight`
        wrapped = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        key = name if name in frozen else wrapped
        assert torch.equal(frozen[key], weight), name


def test_the_merged_model_predicts_what_the_adapter_model_predicts(lora_stream, tmp_path):
    from continual.rounds.export import merged_folder
    from service.pooled import PooledClassifier

    ws, _, _, _ = lora_stream
    model, tokenizer = load_classifier(ws.round_dir("0002-part2") / "model", trainable=False)
    merged = adapters.merged(model)
    assert not adapters.adapter_names(merged) and adapters.adapter_names(model) == ["default"]
    assert torch.allclose(logits(model, tokenizer), logits(merged, tokenizer), atol=1e-5)
    folder = merged_folder(ws.round_dir("0002-part2") / "model", tmp_path / "merged")
    plain = PooledClassifier.load(folder)  # what the registry and the server load: no peft involved
    assert torch.allclose(logits(model, tokenizer), logits(plain, tokenizer), atol=1e-5)


def test_ewc_importance_covers_only_the_trainable_parameters(lora_stream):
    from safetensors.torch import load_file

    ws, _, _, _ = lora_stream
    names = list(load_file(ws.round_dir("0002-part2") / "ewc.safetensors"))
    assert names and all("lora_" in n or ".head." in n for n in names), names


def test_an_unknown_target_module_is_refused_before_training_with_the_valid_names(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    import continual.strategies.finetune as round_module

    ws = build_stream(tmp_path / "ws", [["a", "b"]])
    monkeypatch.setattr(round_module, "train_one_experience", lambda *a, **k: pytest.fail("training started"))
    params = lora_params(tiny_model_dir, target_modules=["query", "q_proj"])
    with pytest.raises(ValueError, match=r"'q_proj' is not a Linear layer.*valid names are: dense, key, query, value"):
        run_round(ws, "0001-part1", params)
    assert not ws.round_dir("0001-part1").exists()


def test_switching_the_adapter_kind_mid_stream_is_refused(tmp_path, tiny_model_dir):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]])
    full = tiny_params(tiny_model_dir, "naive", epochs=1)
    full["export"]["onnx"] = False
    run_round(ws, "0001-part1", full)
    with pytest.raises(ValueError, match=r"model.adapter is 'lora' but round 0001-part1 .* trained with 'none'"):
        run_round(ws, "0002-part2", lora_params(tiny_model_dir, "naive"))
    assert not ws.round_dir("0002-part2").exists()
    with pytest.raises(ValueError, match="olora trains one LoRA adapter per round: set model.adapter: lora"):
        run_round(ws, "0002-part2", tiny_params(tiny_model_dir, "olora"))
    with pytest.raises(ValueError, match="ridge keeps the encoder frozen"):
        run_round(ws, "0001-part1", lora_params(tiny_model_dir, "ridge"))


def test_olora_adds_an_adapter_per_round_and_never_changes_the_earlier_ones(tmp_path, tiny_model_dir):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]])
    params = lora_params(tiny_model_dir, "olora")
    for key in ws.stream():
        run_round(ws, key, params)
    first, _ = load_classifier(ws.round_dir("0001-part1") / "model")
    second, tokenizer = load_classifier(ws.round_dir("0002-part2") / "model")
    assert adapters.adapter_names(second) == ["default", "round-2"]
    base = json.loads((ws.round_dir("0002-part2") / "model" / "base.json").read_text())
    assert base["adapters"] == ["default", "round-2"]
    old, new = adapter_state(first), adapter_state(second)
    assert all(torch.equal(old[name], new[name]) for name in old)  # round 1's adapter is frozen in round 2
    assert any(not torch.equal(new[n], torch.zeros_like(new[n])) for n in new if ".round-2." in n and "lora_B" in n)
    merged = adapters.merged(second)  # both adapters fold into one encoder
    assert torch.allclose(logits(second, tokenizer), logits(merged, tokenizer), atol=1e-5)


def test_the_orthogonality_loss_is_zero_for_orthogonal_subspaces_only():
    layer = torch.nn.Module()
    layer.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(4, 2, bias=False),
                                        "round-2": torch.nn.Linear(4, 2, bias=False)})
    layer.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(2, 4, bias=False),
                                        "round-2": torch.nn.Linear(2, 4, bias=False)})
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        layer.lora_A["round-2"].weight.copy_(torch.tensor([[0, 0, 2.0, 0], [0, 0, 0, 3.0]]))
    loss = OrthogonalLoss(lambda_orth=0.5, lambda_l2=0.0)
    loss.current = "round-2"
    assert float(loss.penalty(layer).detach()) == 0.0
    with torch.no_grad():
        layer.lora_A["round-2"].weight[0, 0] = 1.0  # now it overlaps round 1's first direction: |1*1| = 1
    penalty = loss.penalty(layer)
    assert float(penalty.detach()) == pytest.approx(0.5)
    penalty.backward()  # the gradient reaches the new adapter only
    assert layer.lora_A["round-2"].weight.grad is not None and layer.lora_A["default"].weight.grad is None


@pytest.mark.slow
def test_dvc_repro_with_lora_over_two_arrivals_stores_adapters_and_serves_the_merged_champion(tmp_path,
                                                                                              tiny_model_dir):
    import yaml

    from service import create_app
    from service.app import shutdown
    from helpers import BIN, registry, rounds_run, run, write_arrival

    root = tmp_path / "stream"
    run(tmp_path, BIN / "continual", "init", str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["model"]["adapter"] = "lora"
    params["model"]["lora"].update(rank=4, lr=1e-2)
    params["train"].update(epochs=6, batch_size=16)
    params["strategy"]["replay"]["mem_size"] = 20
    params["tracking"]["registered_model"] = "continual-classifier"  # a name set by hand is used as written
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, labels in (("one", {"neg": "awful terrible", "pos": "lovely great"}),
                         ("two", {"neg": "broken useless", "pos": "works wonderfully"})):
        run(root, BIN / "continual", "ingest", str(write_arrival(tmp_path / f"{name}.csv", labels, 12, name)),
            "--name", name)
        assert rounds_run(run(root, BIN / "dvc", "repro")) == [f"000{1 + (name == 'two')}-{name}"]

    for key in ("0001-one", "0002-two"):
        files = [p for p in (root / "rounds" / key).rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix == ".onnx" or p.name in ("model.safetensors", "config.json")]
        assert (root / "rounds" / key / "model" / "onnx" / "quantization.json").is_file()  # measured, not kept
    status = run(root, BIN / "continual", "status").stdout
    assert "storage (model.adapter: lora" in status and "0002-two" in status.split("storage")[1]

    champion = registry(root).get_model_version_by_alias("continual-classifier", "champion")
    adapter_model, tokenizer = load_classifier(root / "rounds" / champion.tags["round_key"] / "model", trainable=False)
    texts = ["lovely great", "awful terrible", "works wonderfully 3", "a\u0085b\u2028c\x00",
             "lovely " * 1400]  # the server takes at most 10,000 characters a text
    expected = torch.softmax(logits(adapter_model, tokenizer, texts), -1)
    app = create_app({"registered_model": "continual-classifier", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                      "backend": "torch"})
    try:
        http = app.test_client()
        answer = http.post("/predict", json={"texts": texts})
        assert answer.status_code == 200, answer.get_json()
        served = torch.tensor([[p["probabilities"][label] for label in adapter_model.labels]
                               for p in answer.get_json()["predictions"]])
        assert torch.allclose(served, expected, atol=1e-5)  # the merged champion is the adapter model
    finally:
        shutdown(app)

    merged = run(root, BIN / "continual", "merge", "0002-two", str(tmp_path / "merged"))
    assert "merged:" in merged.stdout and (tmp_path / "merged" / "model.safetensors").is_file()
    params["model"]["adapter"] = "none"  # a stream keeps one kind: DVC reruns every round for another
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(root, BIN / "dvc", "status").stdout
    assert "round@0001-one" in changed and "round@0002-two" in changed


def test_adapt_under_lora_trains_adapters_once_then_keeps_them(tiny_model_dir, tmp_path):
    """The shipped default with model.adapter: lora: round 1 trains the adapters, round 2 keeps them frozen and
    solves the head from the sums; the round folders hold adapters and head, no encoder weight."""
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=12, n_test=4)
    metrics = run_stream(ws, lora_params(tiny_model_dir, "adapt"))
    assert [m["adapted"] for m in metrics] == [True, False]
    first, second = (ws.round_dir(k) / "model" for k in ws.stream())
    before = adapter_state(load_classifier(first)[0])
    after_model, tokenizer = load_classifier(second)
    assert before and all(torch.equal(before[k], v) for k, v in adapter_state(after_model).items())
    assert not (second / "model.safetensors").exists()  # adapters and head only
    assert metrics[1]["avg_acc"] > 0.5 and after_model.labels == ["a", "b", "c", "d"]

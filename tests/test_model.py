"""The pooled classifier: pooling read from the encoder's own config, head growth, prototype rows, its folder."""
import json

import pytest
import torch

from continual.model.encoder import embed_rows, grow_head, load_classifier, new_classifier, set_prototype_rows
from continual.model.pretrained import base_model_path
from service.pooled import CLASSIFIER_FILE, LegacyModelFolder, sentence_transformers_pooling


def test_minilm_pooling_is_read_from_its_sentence_transformers_config():
    assert sentence_transformers_pooling(base_model_path("minilm")) == ("mean", True)


def test_pooling_detection_defaults_to_mean_and_reads_other_modes(tmp_path):
    assert sentence_transformers_pooling(tmp_path) == ("mean", False)  # a plain encoder: no modules.json
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                     "pooling_mode_mean_tokens": False}))
    assert sentence_transformers_pooling(tmp_path) == ("cls", False)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ValueError, match="pooling"):
        sentence_transformers_pooling(tmp_path)


def test_head_growth_keeps_old_rows_and_ids(tiny_model_dir, tmp_path):
    model, tokenizer = load_classifier(tiny_model_dir)
    old_weight = model.head.weight.detach().clone()
    old_bias = model.head.bias.detach().clone()

    assert grow_head(model, ["pos", "animal", "neg", "food"]) == ["animal", "food"]

    assert model.labels == ["neg", "neu", "pos", "animal", "food"]
    assert model.head.weight.shape == (5, old_weight.shape[1])
    assert torch.equal(model.head.weight[:3], old_weight)
    assert torch.equal(model.head.bias[:3], old_bias)
    assert model.label2id == {"neg": 0, "neu": 1, "pos": 2, "animal": 3, "food": 4}

    model.save(tmp_path / "grown")
    card = json.loads((tmp_path / "grown" / CLASSIFIER_FILE).read_text())
    assert card["labels"] == model.labels and card["pooling"] == "mean"
    assert not list((tmp_path / "grown").glob("*.bin")) and not list((tmp_path / "grown").glob("*.pkl"))
    reloaded, _ = load_classifier(tmp_path / "grown")
    assert reloaded.labels == model.labels
    assert torch.equal(reloaded.head.weight[:3], old_weight)


def test_growing_with_known_labels_changes_nothing(tiny_model_dir):
    model, _ = load_classifier(tiny_model_dir)
    before = model.head.weight.detach().clone()
    assert grow_head(model, ["neu", "neg"]) == []
    assert torch.equal(model.head.weight, before)


def test_grown_model_still_predicts_old_classes_the_same(tiny_model_dir):
    model, tokenizer = load_classifier(tiny_model_dir)
    ids = tokenizer(["a quiet morning"], return_tensors="pt")
    before = model(ids["input_ids"], ids["attention_mask"])
    grow_head(model, ["x"])
    after = model(ids["input_ids"], ids["attention_mask"])
    assert torch.allclose(after[:, :3], before)


def test_mean_pooling_ignores_padding(tiny_model_dir):
    model, tokenizer = load_classifier(tiny_model_dir)
    texts = ["short", "a much longer text that forces the short one to be padded " * 3]
    alone = embed_rows(model, tokenizer, texts[:1], batch_size=1)
    batched = embed_rows(model, tokenizer, texts, batch_size=2)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_prototype_rows_make_an_nearest_class_mean_head(tiny_model_dir):
    model, tokenizer = new_classifier(tiny_model_dir, ["a", "b", "c"], 32)
    assert float(model.head.weight.detach().abs().sum()) == 0.0  # a fresh head starts empty, not random
    texts = ["apple pear"] * 3 + ["car bus truck"] * 3 + ["red green"] * 3
    targets = [0] * 3 + [1] * 3 + [2] * 3
    texts = [f"{t} {i}" for i, t in enumerate(texts)]
    features = embed_rows(model, tokenizer, texts, batch_size=4)
    set_prototype_rows(model, features, targets, [0, 1, 2], scale=10.0)
    means = torch.stack([features[torch.tensor(targets) == c].mean(0) for c in range(3)])
    assert torch.allclose(model.head.weight.double(), 10.0 * means, atol=1e-5)
    assert torch.allclose(model.head.bias.double(), -5.0 * (means * means).sum(1), atol=1e-5)
    # logits = s(x·μ - |μ|²/2): the argmax is the nearest mean
    with torch.no_grad():
        predicted = model.head(means.float()).argmax(-1)
    assert predicted.tolist() == [0, 1, 2]


def test_a_folder_written_before_pooled_classifiers_is_refused(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "model")
    with pytest.raises(LegacyModelFolder, match="round 1"):
        load_classifier(tmp_path / "model")


def test_a_round_continuing_from_a_pre_pooling_round_folder_says_rerun_from_round_1(tmp_path, tiny_model_dir):
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    from continual.rounds.round import run_round
    from helpers import build_stream, tiny_params

    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=6, n_test=2)
    first, second = ws.stream()
    run_round(ws, first, tiny_params(tiny_model_dir, "naive", epochs=1))
    legacy = ws.round_dir(first) / "model"
    shutil.rmtree(legacy)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    BertForSequenceClassification(config).save_pretrained(legacy)
    with pytest.raises(LegacyModelFolder, match="from round 1"):
        run_round(ws, second, tiny_params(tiny_model_dir, "naive", epochs=1))
    assert not ws.round_dir(second).exists()


def test_max_length_over_the_encoders_limit_is_refused_naming_param_value_and_limit(tiny_model_dir):
    with pytest.raises(ValueError, match=r"model\.max_length is 1000, over the encoder's limit of 512 tokens "
                                         r"\(max_position_embeddings of .*config\.json\): set model\.max_length to 512"):
        new_classifier(tiny_model_dir, ["a", "b"], 1000)
    with pytest.raises(ValueError, match="model.max_length must be an integer of at least 2 tokens, not 0"):
        new_classifier(tiny_model_dir, ["a", "b"], 0)
    model, _ = new_classifier(tiny_model_dir, ["a", "b"], 512)  # the limit itself is fine
    assert model.max_length == 512


@pytest.mark.parametrize("config, limit", [
    ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),  # ids start at pad + 1
    ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, None),
    ({"model_type": "t5"}, None),
])
def test_the_encoders_limit_is_read_from_its_config(tmp_path, config, limit):
    from continual.model.pretrained import encoder_limit

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert encoder_limit(tmp_path) == limit


def test_a_round_with_max_length_over_the_limit_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    import yaml

    from continual import cli
    from continual.rounds.round import run_round
    from helpers import build_stream, snapshot, tiny_params

    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=6, n_test=2)
    first, second = ws.stream()
    params = tiny_params(tiny_model_dir, "naive", epochs=1)
    params["model"]["max_length"] = 1000
    with pytest.raises(ValueError, match="model.max_length is 1000"):  # round 1 builds the model: refused there
        run_round(ws, first, params)
    assert not ws.round_dir(first).exists()
    run_round(ws, first, tiny_params(tiny_model_dir, "naive", epochs=1))

    # Round 2 loads round 1's model rather than building one: `continual round` checks the params first.
    ws.params_file.write_text(yaml.safe_dump({"model": {"base": str(tiny_model_dir), "max_length": 1000}}))
    before = snapshot(ws.root)
    capsys.readouterr()
    assert cli.main(["-C", str(ws.root), "round", second]) == 1
    err = capsys.readouterr().err
    assert err.startswith("continual round: error: params: model.max_length is 1000, over the encoder's limit of "
                          "512 tokens") and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(ws.root) == before and not ws.round_dir(second).exists()

import torch

from continual.model import grow_head, labels_of, load_classifier


def test_head_growth_keeps_old_rows_and_ids(tiny_model_dir, tmp_path):
    model, tokenizer = load_classifier(tiny_model_dir)
    old_weight = model.classifier.weight.detach().clone()
    old_bias = model.classifier.bias.detach().clone()

    labels = grow_head(model, ["pos", "animal", "neg", "food"])

    assert labels == ["neg", "neu", "pos", "animal", "food"]
    assert model.classifier.weight.shape == (5, old_weight.shape[1])
    assert torch.equal(model.classifier.weight[:3], old_weight)
    assert torch.equal(model.classifier.bias[:3], old_bias)
    assert model.config.label2id == {"neg": 0, "neu": 1, "pos": 2, "animal": 3, "food": 4}

    model.save_pretrained(tmp_path / "grown")
    reloaded, _ = load_classifier(tmp_path / "grown")
    assert labels_of(reloaded) == labels
    assert torch.equal(reloaded.classifier.weight[:3], old_weight)


def test_growing_with_known_labels_changes_nothing(tiny_model_dir):
    model, _ = load_classifier(tiny_model_dir)
    before = model.classifier.weight.detach().clone()
    assert grow_head(model, ["neu", "neg"]) == ["neg", "neu", "pos"]
    assert torch.equal(model.classifier.weight, before)


def test_grown_model_still_predicts_old_classes_the_same(tiny_model_dir):
    model, tokenizer = load_classifier(tiny_model_dir)
    model.eval()
    ids = tokenizer(["a quiet morning"], return_tensors="pt")
    before = model(**ids).logits
    grow_head(model, ["x"])
    after = model(**ids).logits
    assert torch.allclose(after[:, :3], before)

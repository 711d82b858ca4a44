"""Drift detection with real MiniLM, served as the server serves it (int8 ONNX): unseen texts of the champion's own
domain stay under the embedding threshold, a later domain crosses it. The frozen encoder with a ridge head keeps
this to a forward pass; benchmarks/drift.py measures the fine-tuned round-1 champions of both streams."""
from __future__ import annotations

import random

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_champion(tmp_path_factory):
    from continual.cli.demo import sample_domain
    from continual.model.evaluation import accuracy
    from continual.rounds.export import export_round_model
    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path
    from continual.params import load_params
    from continual.rounds.reference import write_reference
    from continual.strategies.ridge import fit_ridge_head

    tweets = sample_domain("tweets", 0, 7)
    train, held_out = tweets[:300], tweets[300:500]
    model, tokenizer = new_classifier(base_model_path("minilm"), sorted({r["label"] for r in train}), 128)
    fit_ridge_head(model, tokenizer, train, load_params())
    folder = tmp_path_factory.mktemp("minilm") / "model"
    model.save(folder)
    tokenizer.save_pretrained(folder)
    acc = {"tweets": accuracy(model, tokenizer, held_out, 64)[0]}
    export_round_model(model, tokenizer, folder, {"tweets": held_out}, acc, {"int8_per_channel": True}, 64)
    write_reference(model, tokenizer, folder, train, {"tweets": held_out}, [[acc["tweets"]]], batch_size=64)
    return folder, {r["text"] for r in tweets[:500]}


def window(domain: str, seen: set[str], n: int = 300) -> list[str]:
    from continual.cli.demo import sample_domain

    texts = [r["text"] for r in sample_domain(domain, 0, 7) if r["text"] not in seen]
    random.Random(1).shuffle(texts)
    return texts[:n]


def test_own_domain_stays_under_the_threshold_and_a_later_domain_crosses_it(minilm_champion):
    from continual.reports.drift import score_texts

    folder, seen = minilm_champion
    own = score_texts(str(folder), window("tweets", seen), {})
    later = score_texts(str(folder), window("movies", seen), {})
    assert own["model"]["backend"] == "onnx-int8"
    threshold = own["thresholds"]["embedding_auc"]
    print({"own": own["latest"]["scores"], "later": later["latest"]["scores"]})
    assert own["latest"]["scores"]["embedding_auc"] < threshold < later["latest"]["scores"]["embedding_auc"]
    assert not own["latest"]["drift"]["embedding_auc"] and later["latest"]["drift"]["embedding_auc"]

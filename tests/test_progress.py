"""continual.progress: the bars of long steps, their interval from params.yaml, and the passes that draw them."""
import time

import pytest
import torch

from continual.model import encoder as model_module
from continual import progress
from continual.params import load_params


@pytest.fixture
def interval():
    """Set progress.interval_s for one test (restored after it)."""
    before = progress.interval_s()

    def set_to(seconds: float) -> None:
        progress.configure({"progress": {"interval_s": seconds}})

    yield set_to
    progress.configure({"progress": {"interval_s": before}})


def test_the_interval_comes_from_params_and_is_checked(interval):
    progress.configure(load_params())
    assert progress.interval_s() == load_params()["progress"]["interval_s"] == progress.INTERVAL_S
    interval(0.5)
    assert progress.interval_s() == 0.5
    for wrong in (0, -1, "2", True, None):
        with pytest.raises(ValueError, match="progress.interval_s"):
            progress.configure({"progress": {"interval_s": wrong}})


def test_a_step_shorter_than_the_interval_prints_nothing(interval, capsys):
    interval(3600)
    for _ in progress.bar(range(1000), desc="quick pass"):
        pass
    with progress.ticking("quick step"):
        pass
    assert capsys.readouterr().err == ""


def test_passes_over_the_data_draw_a_bar_named_after_their_step(interval, capsys, tiny_model_dir, monkeypatch):
    from continual.model.evaluation import accuracy
    from continual.model.encoder import load_classifier

    interval(1e-9)  # every update is drawn
    monkeypatch.setattr(model_module, "TOKENIZE_CHUNK", 7)  # several tokenizer calls: the ids must not change
    model, tokenizer = load_classifier(tiny_model_dir, trainable=False)
    rows = [{"text": f"a text of {'many ' * (i % 5)}words number {i}", "label": "pos"} for i in range(50)]
    texts = [r["text"] for r in rows]
    assert model_module.token_ids(tokenizer, texts, model.max_length) == \
        tokenizer(texts, truncation=True, max_length=model.max_length)["input_ids"]
    acc, predictions = accuracy(model, tokenizer, rows, 8, "round 0001-x: evaluate on 0001-x")
    probabilities = torch.softmax(model(*_padded(tokenizer, texts)).float(), -1)
    assert predictions == probabilities.argmax(-1).tolist()  # batched by length, given back in row order
    err = capsys.readouterr().err
    assert "round 0001-x: evaluate on 0001-x: tokenize: 100%" in err and "round 0001-x: evaluate on 0001-x: 100%" in err
    assert "50/50" in err


def _padded(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def test_a_step_with_nothing_to_count_ticks_while_it_runs(interval, capsys):
    interval(0.01)
    with progress.ticking("round 0001-x: loading torch") as shown:
        deadline = time.monotonic() + 30
        while shown.n < 3 and time.monotonic() < deadline:  # the step: blocked until the thread has ticked
            time.sleep(0.01)
    assert shown.n >= 3
    assert "round 0001-x: loading torch: 00:0" in capsys.readouterr().err

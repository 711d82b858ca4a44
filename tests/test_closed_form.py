"""The closed-form strategies: ridge sums that equal one joint solve, state round trips, frozen encoder."""
import json

import pytest
import torch
from safetensors.torch import load_file

from continual.model.encoder import new_classifier
from continual.strategies import make_strategy
from helpers import build_stream, run_stream, tiny_params


def fitted(strategy_name: str, params: dict, model_dir, parts: list[tuple[torch.Tensor, torch.Tensor]], classes: int):
    params = {**params, "strategy": {**params["strategy"], "name": strategy_name}}
    strategy = make_strategy(params)
    model, _ = new_classifier(model_dir, [str(c) for c in range(classes)], 32)
    strategy.prepare(model, classes)
    for features, targets in parts:
        strategy.fit(model, model.features(features.float()).double(), targets)
    return strategy, model


@pytest.mark.parametrize("projection_dim", [0, 64])
def test_ridge_one_arrival_at_a_time_equals_solving_on_all_at_once(tiny_model_dir, projection_dim):
    params = tiny_params(tiny_model_dir, "ridge")
    params["strategy"]["ridge"]["projection_dim"] = projection_dim
    params["strategy"]["ridge"]["lambda"] = 10.0  # fixed: compared with the textbook solution at that λ
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(90, 32, generator=generator, dtype=torch.float64), dim=1)
    targets = torch.cat([torch.arange(2).repeat(15), 2 + torch.arange(2).repeat(15), 4 + torch.arange(2).repeat(15)])
    # class-incremental: arrival 1 brings classes 0-1, arrival 2 classes 2-3, arrival 3 classes 4-5
    parts = [(features[i * 30:(i + 1) * 30], targets[i * 30:(i + 1) * 30]) for i in range(3)]
    _, one_by_one = fitted("ridge", params, tiny_model_dir, parts, 6)
    _, at_once = fitted("ridge", params, tiny_model_dir, [(features, targets)], 6)
    assert torch.allclose(one_by_one.head.weight, at_once.head.weight, atol=1e-6)
    assert torch.allclose(one_by_one.head.bias, at_once.head.bias, atol=1e-6)
    # and both equal the textbook ridge solution on all rows (bias as a constant feature)
    x = torch.cat([one_by_one.features(features.float()).double(), torch.ones(90, 1, dtype=torch.float64)], 1)
    y = torch.nn.functional.one_hot(targets, 6).double()
    lam, scale = 10.0, float(params["strategy"]["ridge"]["logit_scale"])
    expected = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    assert torch.allclose(at_once.head.weight.double(), scale * expected[:-1].T, atol=1e-5)


@pytest.mark.parametrize("name", ["ridge", "ncm"])
def test_closed_form_state_round_trips(tiny_model_dir, tmp_path, name):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=10, n_test=4)
    params = tiny_params(tiny_model_dir, name)
    params["strategy"]["ridge"]["projection_dim"] = 16
    metrics = run_stream(ws, params)
    first, second = (ws.round_dir(k) for k in ws.stream())
    state = f"{name}.safetensors"
    assert json.loads((second / "round.json").read_text())["labels"] == ["a", "b", "c", "d"]
    saved = load_file(second / state)
    strategy = make_strategy({**params, "strategy": {**params["strategy"], "name": name}})
    strategy.restore(second, None, None)
    assert set(strategy.sums) == set(saved) and all(torch.equal(strategy.sums[k], saved[k]) for k in saved)
    # the second round read the first's sums: its counts (ncm) or Gram diagonal (ridge) hold both arrivals
    before = load_file(first / state)
    key = "counts" if name == "ncm" else "gram"
    assert float(saved[key].sum()) > float(before[key].sum())
    if name == "ridge":
        assert float(saved["gram"][-1, -1]) == 40.0  # the bias feature counts the rows: 2 arrivals x 20 rows
        assert torch.equal(saved["projection"], before["projection"])  # one fixed projection for the stream
    assert metrics[-1]["examples"] == 20 and not any(ws.round_dir(k).joinpath("buffer.jsonl").exists()
                                                      for k in ws.stream())


def test_closed_form_rounds_leave_the_encoder_frozen(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file as load

    ws = build_stream(tmp_path / "ws", [["a", "b"]], n_train=10, n_test=4)
    run_stream(ws, tiny_params(tiny_model_dir, "ncm"))
    trained = load(ws.round_dir(ws.stream()[0]) / "model" / "model.safetensors")
    base = load(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(trained[k], base[k]) for k in trained)


def test_continuing_a_stream_that_was_not_closed_form_says_what_to_do(tiny_model_dir, tmp_path):
    from continual.rounds.round import run_round

    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=10, n_test=4)
    run_round(ws, ws.stream()[0], tiny_params(tiny_model_dir, "naive", epochs=1))
    with pytest.raises(FileNotFoundError, match="round 1"):
        run_round(ws, ws.stream()[1], tiny_params(tiny_model_dir, "ridge"))


@pytest.mark.parametrize("how", ["prototypes", "ridge", "sums"])
def test_head_refit_after_a_class_incremental_round(tiny_model_dir, tmp_path, how):
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]], n_train=10, n_test=4)
    params = tiny_params(tiny_model_dir, "replay", epochs=1)
    params["train"].update(head_refit="on_growth", head_refit_with=how)
    run_stream(ws, params)
    first, second = (ws.round_dir(k) for k in ws.stream())
    assert (second / "head_sums.safetensors").exists() == (how == "sums")
    if how == "sums":  # round 2 added its arrival to round 1's sums: the bias feature counts both arrivals' rows
        assert float(load_file(first / "head_sums.safetensors")["gram"][-1, -1]) == 20.0
        assert float(load_file(second / "head_sums.safetensors")["gram"][-1, -1]) == 40.0
    head = load_file(second / "model" / "head.safetensors")
    if how == "prototypes":  # every class present in arrival + buffer: bias = -s/2 |w/s|^2 holds for each row
        scale = float(params["train"]["prototype_scale"])
        expected = -(head["weight"] / scale).pow(2).sum(1) * scale / 2
        assert torch.allclose(head["bias"], expected, atol=1e-4)


def test_head_refit_rejects_unknown_settings(tiny_model_dir):
    from continual.model.head import HeadRefit

    params = tiny_params(tiny_model_dir, "replay")
    params["train"]["head_refit_with"] = "magic"
    with pytest.raises(ValueError, match="head_refit_with"):
        HeadRefit(params)

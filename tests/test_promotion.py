"""The promotion gate (pure) and the champion alias it moves (real SQLite registry, no mocks)."""
from __future__ import annotations

import pytest

from continual import promotion, tracking
from continual.params import load_params
from continual.promotion import Gate, decide
from test_tracking import NAMES, write_stream  # the round-folder builder lives beside the tracking tests

GATE = Gate(max_avg_acc_drop=0.02, max_forgetting=0.10, min_new_acc=0.40)


def candidate(acc: dict[str, float], forgetting: dict[str, float]) -> dict:
    key = list(acc)[-1]
    return {"key": key, "acc": acc, "avg_acc": sum(acc.values()) / len(acc), "forgetting": forgetting}


# -- the gate, pure -----------------------------------------------------------------------------------------
def test_gate_without_champion_accepts_a_model_that_did_not_forget():
    decision = decide(candidate({"a": 0.78, "b": 0.80}, {"a": 0.03}), None, GATE)
    assert decision.accepted
    assert len(decision.reasons) == 2 and all(r.startswith("ok: ") for r in decision.reasons)


def test_gate_refuses_a_model_that_forgot_more_than_the_bound():
    decision = decide(candidate({"a": 0.55, "b": 0.60, "c": 0.82}, {"a": 0.25, "b": 0.05}), None, GATE)
    assert not decision.accepted
    assert decision.reasons[1] == "refused: largest forgetting 0.250 (on a), bound 0.100"


def test_gate_lets_forgetting_of_exactly_the_bound_pass():
    assert decide(candidate({"a": 0.71, "b": 0.8}, {"a": 0.81 - 0.71}), None, GATE).accepted


def test_gate_refuses_a_new_arrival_below_the_floor():
    decision = decide(candidate({"a": 0.80, "b": 0.35}, {"a": 0.0}), None, GATE)
    assert not decision.accepted and decision.reasons[0].startswith("refused: accuracy on the new arrival b")


def test_gate_compares_average_accuracy_on_the_arrivals_both_were_measured_on():
    new = candidate({"a": 0.75, "b": 0.80}, {"a": 0.05})
    # The champion is the parent: its accuracy on b (acc_before_update 0.50) is known, so b counts.
    assert decide(new, {"a": 0.80, "b": 0.50}, GATE).accepted
    # Only a is common, and on it the candidate is 0.05 worse: more than the allowed drop.
    refused = decide(new, {"a": 0.80}, GATE)
    assert not refused.accepted
    assert refused.reasons[-1].startswith("refused: avg accuracy 0.750 against the champion's 0.800 on 1 common")


# -- the champion alias in a real registry -----------------------------------------------------------------
@pytest.fixture(autouse=True)
def local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_gate_moves_the_champion_and_by_hand_moves_are_recorded(tmp_path, tiny_model_dir, capsys):
    # Round 2 forgets tweets (0.80 -> 0.55); round 3 recovers it.
    ws = write_stream(tmp_path / "ws", tiny_model_dir, [[0.80], [0.55, 0.82], [0.79, 0.78, 0.81]], NAMES)
    params = load_params(ws.params_file)
    decisions = {}
    for key in ws.stream():
        tracking.log_round(ws, key, params)
        decisions[key] = promotion.promote_if_better(ws, key, params)
    client, _ = tracking.connect(ws, params)
    name = params["tracking"]["registered_model"]

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, "champion").version)

    assert decisions["0001-tweets"].accepted
    refused = decisions["0002-movies"]
    assert not refused.accepted
    assert "refused: largest forgetting 0.250 (on 0001-tweets), bound 0.100" in refused.reasons
    assert any("on 2 common arrivals" in r for r in refused.reasons)  # champion v1 is round 2's parent
    run = client.get_run(client.get_model_version(name, "2").run_id)
    assert run.data.tags["promotion.decision"] == "refused"
    assert "largest forgetting 0.250" in run.data.tags["promotion.reasons"]
    assert client.get_model_version(name, "2").tags["promotion.decision"] == "refused"
    assert decisions["0003-amazon"].accepted  # compared with v1 on tweets only: 0.79 against 0.80
    assert champion() == "3"
    assert client.get_registered_model(name).tags["champion.history"] == "1,3"
    assert "refused" in capsys.readouterr().out

    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    predictions = served.predict(["what a lovely film", "this was awful"])
    assert list(predictions["label"]) and set(predictions["label"]) <= {"neg", "neu", "pos"}

    assert promotion.rollback(ws) == "1" and champion() == "1"
    assert "-> v1 (rollback)" in client.get_registered_model(name).tags["champion.last_move"]
    assert promotion.promote(ws, "0002-movies") == "2" and champion() == "2"
    assert client.get_model_version(name, "2").tags["champion.how"] == "by hand, round 0002-movies"
    assert "champion: continual-classifier v1 -> v2 (by hand, round 0002-movies)" in capsys.readouterr().out
    assert promotion.rollback(ws) == "1" and champion() == "1"
    with pytest.raises(RuntimeError, match="no earlier champion"):
        promotion.rollback(ws)


def test_a_last_round_restored_from_the_run_cache_is_gated_and_older_restored_rounds_are_not(tmp_path, tiny_model_dir):
    ws = write_stream(tmp_path / "ws", tiny_model_dir, [[0.80], [0.81, 0.70], [0.80, 0.72, 0.75]], NAMES)
    params = load_params(ws.params_file)
    tracking.log_round(ws, "0001-tweets", params)
    assert promotion.promote_if_better(ws, "0001-tweets", params).accepted  # champion v1
    # Rounds 2 and 3 came back from DVC's run cache: their stages (log + gate) never ran.
    reconciled = tracking.reconcile(ws, params)
    assert list(reconciled) == ["0002-movies", "0003-amazon"]
    decision = promotion.gate_restored_head(ws, params, reconciled)

    client, _ = tracking.connect(ws, params)
    name = params["tracking"]["registered_model"]
    champion = client.get_model_version_by_alias(name, "champion")
    assert decision.accepted and client.get_run(champion.run_id).info.run_name == "0003-amazon"
    middle = client.get_run(reconciled["0002-movies"])
    assert "promotion.decision" not in middle.data.tags  # round 2 never competed with round 3
    assert client.get_registered_model(name).tags["champion.history"] == "1,3"
    assert promotion.gate_restored_head(ws, params, tracking.reconcile(ws, params)) is None  # nothing new

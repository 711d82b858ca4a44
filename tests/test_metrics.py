import pytest

from continual.rounds.metrics import average_accuracy, backward_transfer, forgetting, summarise

MATRIX = [
    [0.90],
    [0.70, 0.80],
    [0.60, 0.85, 0.75],
]


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert average_accuracy(MATRIX) == pytest.approx((0.60 + 0.85 + 0.75) / 3)


def test_forgetting_is_best_earlier_accuracy_minus_now():
    # arrival 1 improved after it was learned: negative forgetting
    assert forgetting(MATRIX) == pytest.approx({0: 0.90 - 0.60, 1: 0.80 - 0.85})


def test_forgetting_uses_the_best_not_the_first_accuracy():
    assert forgetting([[0.5], [0.9, 0.7], [0.6, 0.7, 0.8]])[0] == pytest.approx(0.3)


def test_bwt_compares_now_with_right_after_learning():
    assert backward_transfer(MATRIX) == pytest.approx(((0.60 - 0.90) + (0.85 - 0.80)) / 2)


def test_first_round_has_no_forgetting_and_zero_bwt():
    summary = summarise([[0.8]], ["0001-a"])
    assert summary["forgetting"] == {} and summary["forgetting_avg"] == 0.0 and summary["bwt"] == 0.0


def test_summary_keys_by_arrival():
    summary = summarise(MATRIX, ["0001-a", "0002-b", "0003-c"])
    assert summary["acc"]["0003-c"] == 0.75
    assert summary["forgetting"]["0001-a"] == pytest.approx(0.30)
    assert summary["forgetting_max"] == pytest.approx(0.30)
    assert summary["forgetting_avg"] == pytest.approx((0.30 - 0.05) / 2)

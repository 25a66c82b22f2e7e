"""Metrics against matrices computed by hand."""

import pytest

from lifelong import metrics

R3 = [
    [0.9, None, None],
    [0.6, 0.8, None],
    [0.5, 0.7, 1.0],
]


def test_three_tasks_by_hand():
    assert metrics.average_accuracy_per_task(R3) == pytest.approx([0.9, 0.7, 2.2 / 3])
    assert metrics.final_accuracy(R3) == pytest.approx(2.2 / 3)
    assert metrics.average_incremental_accuracy(R3) == pytest.approx((0.9 + 0.7 + 2.2 / 3) / 3)
    # forgetting: task0 max(0.9, 0.6) - 0.5 = 0.4; task1 max(0.8) - 0.7 = 0.1 -> 0.25
    assert metrics.forgetting(R3) == pytest.approx(0.25)
    # backward transfer: (0.5 - 0.9 + 0.7 - 0.8) / 2 = -0.25
    assert metrics.backward_transfer(R3) == pytest.approx(-0.25)


def test_forgetting_uses_best_earlier_accuracy_not_first():
    R = [[0.5, None, None], [0.9, 0.8, None], [0.7, 0.8, 0.6]]
    # task0: best before last = 0.9, final 0.7 -> 0.2; task1: 0.8 - 0.8 = 0 -> 0.1
    assert metrics.forgetting(R) == pytest.approx(0.1)
    # BWT compares with accuracy right after learning: (0.7 - 0.5 + 0.8 - 0.8) / 2 = 0.1 (positive transfer)
    assert metrics.backward_transfer(R) == pytest.approx(0.1)


def test_single_task_has_no_forgetting():
    s = metrics.summary([[0.8]])
    assert s["final_accuracy"] == pytest.approx(0.8)
    assert s["average_incremental_accuracy"] == pytest.approx(0.8)
    assert s["forgetting"] is None and s["backward_transfer"] is None


def test_malformed_matrix_rejected():
    with pytest.raises(ValueError):
        metrics.final_accuracy([])
    with pytest.raises(ValueError):
        metrics.final_accuracy([[0.5, None], [None, 0.5]])

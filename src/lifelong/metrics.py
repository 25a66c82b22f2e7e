"""The field's metrics, all derived from the accuracy matrix R (R[i][j]: accuracy on task j after task i).

- final average accuracy: mean_j R[T-1][j]
- average incremental accuracy (Rebuffi et al., 2017): mean_i A_i with A_i = mean_{j<=i} R[i][j]
- forgetting (Chaudhry et al., 2018): mean_{j<T-1} max_{l<T-1} R[l][j] - R[T-1][j]
- backward transfer (Lopez-Paz & Ranzato, 2017): mean_{j<T-1} R[T-1][j] - R[j][j]
Forgetting and backward transfer need two tasks; with one they are None.
"""

from __future__ import annotations

from collections.abc import Sequence


def _check(R: Sequence[Sequence[float | None]]) -> int:
    T = len(R)
    if T == 0:
        raise ValueError("empty accuracy matrix")
    for i, row in enumerate(R):
        if len(row) != T or any(row[j] is None for j in range(i + 1)):
            raise ValueError(f"row {i} of the accuracy matrix must have {T} entries, filled up to column {i}")
    return T


def average_accuracy_per_task(R) -> list[float]:
    T = _check(R)
    return [sum(R[i][: i + 1]) / (i + 1) for i in range(T)]


def final_accuracy(R) -> float:
    return average_accuracy_per_task(R)[-1]


def average_incremental_accuracy(R) -> float:
    a = average_accuracy_per_task(R)
    return sum(a) / len(a)


def forgetting(R) -> float | None:
    T = _check(R)
    if T < 2:
        return None
    return sum(max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def backward_transfer(R) -> float | None:
    T = _check(R)
    if T < 2:
        return None
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def summary(R) -> dict:
    return {
        "accuracy_matrix": [list(r) for r in R],
        "average_accuracy_per_task": average_accuracy_per_task(R),
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "forgetting": forgetting(R),
        "backward_transfer": backward_transfer(R),
    }

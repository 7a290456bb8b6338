"""Pareto maths over objective vectors, on moocore.

Objectives come with a direction each (`maximise[i]`: accuracies are
maximised, a cost is minimised). Hypervolume is measured against a reference
point that every useful candidate beats: accuracy 0, and for costs a
configurable worst value.
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np


def _array(points: Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(points, dtype=float)
    return a.reshape(len(points), -1) if len(points) else np.zeros((0, 0))


def nondominated(points: Sequence[Sequence[float]], maximise: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point are kept)."""
    a = _array(points)
    if len(a) == 0:
        return []
    mask = moocore.is_nondominated(a, maximise=list(maximise), keep_weakly=True)
    return [int(i) for i in np.flatnonzero(mask)]


def pareto_ranks(points: Sequence[Sequence[float]], maximise: Sequence[bool]) -> list[int]:
    """Non-dominated sorting: rank 0 is the front, rank 1 the front once it is removed, ..."""
    a = _array(points)
    if len(a) == 0:
        return []
    return [int(r) for r in moocore.pareto_rank(a, maximise=list(maximise))]


def reference_point(maximise: Sequence[bool], cost_worst: float = 10.0) -> list[float]:
    """Accuracy 0 for maximised objectives; `cost_worst` (x BN-ReLU's time) for minimised ones."""
    return [0.0 if m else cost_worst for m in maximise]


def hypervolume(points: Sequence[Sequence[float]], maximise: Sequence[bool],
                ref: Sequence[float] | None = None) -> float:
    """The volume dominated by the points and bounded by `ref`; points not better than ref count 0."""
    ref = list(ref) if ref is not None else reference_point(maximise)
    a = _array(points)
    if len(a) == 0:
        return 0.0
    columns = zip(maximise, ref, strict=True)
    better = np.all([(a[:, i] > r) if m else (a[:, i] < r) for i, (m, r) in enumerate(columns)], axis=0)
    a = a[better]
    if len(a) == 0:
        return 0.0
    return float(moocore.hypervolume(a, ref=ref, maximise=list(maximise)))

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


def front_order(objectives: Sequence[float], maximise: Sequence[bool]) -> tuple[float, float]:
    """Sort key of a front member: highest total of the maximised objectives (the accuracies)
    first; ties go to the lowest total of the minimised ones (the cost)."""
    up = sum(v for v, m in zip(objectives, maximise, strict=False) if m)
    down = sum(v for v, m in zip(objectives, maximise, strict=False) if not m)
    return (-up, down)


def maximised_mean(values: Sequence[float], maximise: Sequence[bool]) -> float:
    """Mean of the maximised objectives (the accuracies): what "best" means for one layer; a minimised
    cost does not count."""
    kept = [v for v, up in zip(values, maximise, strict=False) if up]
    return sum(kept) / max(1, len(kept))


class Front:
    """A non-dominated set kept up to date one point at a time (the live dashboard's front).

    `add` keeps what `nondominated` over every point added so far would keep (weakly equal points
    included), in the order they came: a point enters unless a member dominates it, and pushes out
    the members it dominates.
    """

    def __init__(self, maximise: Sequence[bool]) -> None:
        self.maximise = list(maximise)
        self.keys: list[int] = []
        self._points = np.zeros((0, len(self.maximise)))
        # In "larger is better" units, for the one vectorized test below.
        self._signs = np.array([1.0 if m else -1.0 for m in self.maximise])

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def points(self) -> list[tuple[float, ...]]:
        return [tuple(float(v) for v in p) for p in self._points]

    def dominated(self, points: Sequence[Sequence[float]]) -> list[bool]:
        """For each point, whether a current member dominates it (a point the front dominates now can
        never enter: the front only improves)."""
        if not len(points) or not len(self._points):
            return [False] * len(points)
        q = (np.asarray(points, dtype=float) * self._signs)[:, None, :]     # (n, 1, m)
        f = (self._points * self._signs)[None, :, :]                        # (1, k, m)
        return [bool(d) for d in np.any(np.all(f >= q, axis=2) & np.any(f > q, axis=2), axis=1)]

    def add(self, key: int, point: Sequence[float]) -> bool:
        """Offer a point; True if it entered the front."""
        both = np.vstack([self._points, np.asarray(point, dtype=float)[None, :]])
        keep = moocore.is_nondominated(both, maximise=self.maximise, keep_weakly=True)
        if not keep[-1]:
            return False
        old = keep[:-1]
        if not old.all():
            self.keys = [k for k, kept in zip(self.keys, old, strict=True) if kept]
        self._points = both[keep]
        self.keys.append(key)
        return True

    def hypervolume(self) -> float:
        return hypervolume(self.points, self.maximise)

"""Pareto maths against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evonorm_search.pareto import Front, hypervolume, nondominated, pareto_ranks, reference_point


def dominates(a: tuple[float, ...], b: tuple[float, ...], maximise: list[bool]) -> bool:
    better_or_equal = all((x >= y) if m else (x <= y) for x, y, m in zip(a, b, maximise, strict=True))
    strictly = any((x > y) if m else (x < y) for x, y, m in zip(a, b, maximise, strict=True))
    return better_or_equal and strictly


def brute_front(points: list[tuple[float, ...]], maximise: list[bool]) -> list[int]:
    return [i for i, p in enumerate(points) if not any(dominates(q, p, maximise) for q in points)]


def brute_ranks(points: list[tuple[float, ...]], maximise: list[bool]) -> list[int]:
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        layer = [i for i in remaining
                 if not any(dominates(points[j], points[i], maximise) for j in remaining)]
        for i in layer:
            ranks[i] = rank
        remaining -= set(layer)
        rank += 1
    return ranks


def brute_hypervolume(points: list[tuple[float, ...]], maximise: list[bool], ref: list[float]) -> float:
    """Exact volume by cutting space into the grid the coordinates span."""
    # turn everything into maximisation above the reference
    flipped = [tuple(v if m else -v for v, m in zip(p, maximise, strict=True)) for p in points]
    r = [v if m else -v for v, m in zip(ref, maximise, strict=True)]
    flipped = [p for p in flipped if all(v > rv for v, rv in zip(p, r, strict=True))]
    if not flipped:
        return 0.0
    axes = [sorted({r[d], *(p[d] for p in flipped)}) for d in range(len(r))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        upper = [axes[d][i + 1] for d, i in enumerate(cell)]
        if any(all(p[d] >= upper[d] for d in range(len(r))) for p in flipped):
            volume = 1.0
            for d, i in enumerate(cell):
                volume *= axes[d][i + 1] - axes[d][i]
            total += volume
    return total


values = st.integers(0, 20).map(lambda v: v / 20)


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[list[tuple[float, ...]], list[bool]]:
    dims = draw(st.integers(2, 3))
    maximise = draw(st.lists(st.booleans(), min_size=dims, max_size=dims))
    pts = draw(st.lists(st.tuples(*[values] * dims), min_size=1, max_size=12))
    return pts, maximise


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_front_and_ranks_match_brute_force(data: tuple[list[tuple[float, ...]], list[bool]]) -> None:
    points, maximise = data
    assert nondominated(points, maximise) == brute_front(points, maximise)
    assert pareto_ranks(points, maximise) == brute_ranks(points, maximise)


@settings(max_examples=100, deadline=None)
@given(point_sets())
def test_hypervolume_matches_brute_force(data: tuple[list[tuple[float, ...]], list[bool]]) -> None:
    points, maximise = data
    ref = [0.0 if m else 1.1 for m in maximise]
    expected = brute_hypervolume(points, maximise, ref)
    assert hypervolume(points, maximise, ref) == pytest.approx(expected, abs=1e-9)


def test_hypervolume_known_values() -> None:
    # two accuracies: a single point (0.5, 0.5) dominates a quarter of the unit square
    assert hypervolume([(0.5, 0.5)], [True, True]) == pytest.approx(0.25)
    # adding a dominated point changes nothing; a new corner adds its rectangle
    assert hypervolume([(0.5, 0.5), (0.4, 0.4)], [True, True]) == pytest.approx(0.25)
    assert hypervolume([(0.5, 0.5), (0.9, 0.1)], [True, True]) == pytest.approx(0.25 + 0.4 * 0.1)
    # a point no better than the reference counts nothing
    assert hypervolume([(0.0, 0.7)], [True, True]) == 0.0
    assert hypervolume([], [True, True]) == 0.0


def test_reference_point_directions() -> None:
    assert reference_point([True, False], cost_worst=5.0) == [0.0, 5.0]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.sampled_from([0.0, 0.5, 1.0]),
                          st.sampled_from([0.5, 1.0, 2.0])), max_size=25),
       st.sampled_from([[True, True, False], [True, True, True], [False, True, False]]))
def test_the_incremental_front_is_the_front_of_everything_added(points: list[tuple[float, ...]],
                                                                 maximise: list[bool]) -> None:
    front = Front(maximise)
    for i, p in enumerate(points):
        dominated = front.dominated([p])[0]
        entered = front.add(i, p)
        assert entered is not dominated          # the vectorized test and moocore agree
    assert front.keys == brute_front(points, maximise)   # duplicates of a front point kept, in order
    assert front.points == [points[i] for i in front.keys]
    assert front.hypervolume() == pytest.approx(hypervolume([points[i] for i in front.keys], maximise))

"""The funnel's maths: estimates, the paired test, and who climbs (ASHA, multi-objective)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from evonorm_search.config import load_config
from evonorm_search.funnel import ALPHA, Funnel, compare, estimate, paired_p


def test_estimate_is_mean_stderr_n():
    e = estimate([0.5, 0.7, 0.9])
    assert e.mean == pytest.approx(0.7) and e.n == 3
    assert e.stderr == pytest.approx(0.2 / math.sqrt(3))      # sample sd 0.2
    assert estimate([0.4]).stderr is None
    with pytest.raises(ValueError):
        estimate([])


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=12))
def test_paired_p_is_the_one_sided_t_test(diffs):
    p = paired_p(diffs)
    assert p is not None and 0 <= p <= 1
    if max(diffs) - min(diffs) > 1e-9:
        assert p == pytest.approx(stats.ttest_1samp(diffs, 0, alternative="greater").pvalue)


def test_paired_p_edge_cases():
    assert paired_p([0.1]) is None                 # one pair: no test, no claim
    assert paired_p([0.02, 0.02, 0.02]) == 0.0     # identical positive differences
    assert paired_p([0.0, 0.0]) == 1.0


def test_compare_pairs_by_seed_and_claims_only_significant_wins():
    obj = "mobilenet:shapes32"
    base = {(obj, 300, s): 0.80 + 0.05 * (s % 2) for s in range(5)}   # a seed effect both share
    better = {k: v + 0.01 + 0.001 * k[2] for k, v in base.items()}
    c = compare(better, base, obj, "bn_relu")
    assert c is not None and c.diff.n == 5 and c.diff.mean == pytest.approx(0.012)
    assert c.p is not None and c.p < ALPHA and c.beats
    # unpaired, the shared seed effect would swamp the 0.012 gain: pairing is what finds it
    unpaired = stats.ttest_ind(list(better.values()), list(base.values()), alternative="greater").pvalue
    assert unpaired > ALPHA
    worse = {k: v - 0.01 for k, v in base.items()}
    assert not compare(worse, base, obj, "bn_relu").beats   # type: ignore[union-attr]
    noisy = {k: v + (0.05 if k[2] % 2 else -0.04) for k, v in base.items()}
    assert not compare(noisy, base, obj, "bn_relu").beats   # type: ignore[union-attr]
    # only the same (objective, steps, seed) pair up
    assert compare({(obj, 100, 0): 0.9}, base, obj, "bn_relu") is None


def funnel(**overrides) -> Funnel:
    cfg = load_config("quick", overrides)
    return Funnel(cfg.eval_spec(), [(r.steps_frac, r.seeds, r.promote) for r in cfg.rungs], cfg.seed,
                  cfg.maximise)


def fill(f: Funnel, cid: int, rung: int, scores: tuple[float, float]) -> None:
    for r in range(rung + 1):
        f.add(cid, [(k, scores[0] if k[0].startswith("mobilenet") else scores[1]) for k in f.keys(r)])


def test_rungs_nest_seeds_and_reuse_runs():
    f = funnel(seed=7, rungs=[{"steps_frac": 0.5, "seeds": 1}, {"steps_frac": 1, "seeds": 2},
                              {"steps_frac": 1, "seeds": 3}])
    assert [r.seeds for r in f.rungs] == [(7,), (7, 8), (7, 8, 9)]
    assert f.rungs[-1].top and not f.rungs[0].top
    # the top rung needs only one more seed per task than rung 1: same steps
    assert len(set(f.keys(2)) - set(f.keys(1))) == 2
    fill(f, 1, 1, (0.5, 0.4))
    assert f.has_rung(1, 1) and not f.has_rung(1, 2)
    assert [e.n for e in f.estimates(1, 1)] == [2, 2]


def test_promotions_are_asynchronous_quotas_of_each_rung():
    f = funnel(rungs=[{"steps_frac": 0.5, "seeds": 1, "promote": 0.5}, {"steps_frac": 1, "seeds": 2}])
    rung_of = {}
    # two finishers: the quota is 1, the better one climbs at once
    for cid, s in [(1, (0.5, 0.5)), (2, (0.9, 0.9))]:
        fill(f, cid, 0, s)
        rung_of[cid] = 0
    assert f.promotions(rung_of) == [(2, 1)]
    # while it climbs, a third arrives: the quota (1) is still taken by 2
    fill(f, 3, 0, (0.6, 0.6))
    rung_of[3] = 0
    assert f.promotions(rung_of, busy={2}) == []
    # a fourth and better: quota 2, so 4 climbs too (2 is busy)
    fill(f, 4, 0, (0.95, 0.2))
    rung_of[4] = 0
    assert f.promotions(rung_of, busy={2}) == [(4, 1)]


def test_promotion_ranks_by_pareto_rank_then_mean():
    f = funnel(rungs=[{"steps_frac": 0.5, "seeds": 1, "promote": 0.34}, {"steps_frac": 1, "seeds": 2}])
    # 3 is dominated by 2 though its mean beats 1's; 1 and 2 are both on the front
    for cid, s in [(1, (0.99, 0.10)), (2, (0.60, 0.60)), (3, (0.55, 0.58))]:
        fill(f, cid, 0, s)
    assert f.promotions({1: 0, 2: 0, 3: 0}) == [(2, 1)]          # front, higher mean


def test_baselines_always_climb_and_take_no_quota():
    f = funnel()
    fill(f, 1, 0, (0.1, 0.1))
    assert f.promotions({1: 0}, baselines={1}) == [(1, 1)]
    fill(f, 1, 1, (0.1, 0.1))
    assert f.promotions({1: 1}, baselines={1}) == [(1, 2)]
    assert f.promotions({1: 2}, baselines={1}) == []          # the top


def test_the_final_pass_lets_each_rungs_best_climb():
    f = funnel()                                                # promote 1/3 at rung 0
    fill(f, 1, 0, (0.5, 0.5))
    fill(f, 2, 0, (0.7, 0.7))
    assert f.promotions({1: 0, 2: 0}) == []                     # floor(2/3) = 0
    assert f.promotions({1: 0, 2: 0}, final=True) == [(2, 1)]


def test_config_checks_the_funnel():
    with pytest.raises(ValueError, match="fewer steps or seeds"):
        load_config("quick", {"rungs": [{"steps_frac": 1, "seeds": 2}, {"steps_frac": 0.5, "seeds": 2}]})
    with pytest.raises(ValueError, match="never selects on"):
        load_config("quick", {"heldout_tasks": [{"backbone": "mobilenet", "task": "shapes32"}]})
    with pytest.raises(ValueError, match="unknown baseline"):
        load_config("quick", {"baselines": ["nope"]})
    assert load_config(None, {}).baseline_names == ["bn_relu"]
    assert load_config(None, {"batch_independent": True}).baseline_names == ["bn_relu", "gn_relu", "evonorm_s0"]


def test_a_presets_held_out_task_that_becomes_an_objective_is_dropped():
    digits = {"backbone": "resnet", "task": "digits"}
    cfg = load_config("quick", {"tasks": [digits]})
    assert cfg.heldout_tasks == [] and cfg.objectives == ["resnet:digits"]
    kept = load_config("quick", {"tasks": [{"backbone": "mobilenet", "task": "digits"}]})
    assert [f"{t.backbone}:{t.task}" for t in kept.heldout_tasks] == ["resnet:digits"]
    with pytest.raises(ValueError, match="never selects on"):        # said explicitly: an error
        load_config("quick", {"tasks": [digits], "heldout_tasks": [digits]})

"""train_rung(): a rung's runs at its seeds and steps, reuse of runs already made, rung 0's
stability and multi-objective quality verdict, held-out runs at the top, faults as rejections.

ResNet on sklearn digits and the character Transformer, a few steps each: seconds of CPU.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from primitives import Graph
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, ProxyTask, screen
from workers.funnel import RungSpec, RunScore, planned_runs, quality_verdict, train_rung
from workers.rejection import Stage
from workers.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TrainConfig(steps=12, backbone_kwargs={"widths": [8, 8, 8]})
SPEC = EvalSpec(tasks=(ProxyTask("resnet", "digits", TINY),), stability_steps=3,
                heldout_tasks=(ProxyTask("mobilenet", "digits", replace(TINY, backbone_kwargs={})),))
BN_RELU = ZOO["bn_relu"].graph
assert BN_RELU is not None


def test_rung_trains_each_task_at_each_seed_for_its_share_of_steps():
    rung = RungSpec(0, 0.5, (3, 4), quality=False)    # 6 steps: too few to pass the quality bar
    r = train_rung(BN_RELU, SPEC, rung, screen(BN_RELU, SPEC))
    assert r.rejection is None and r.rung == 0
    assert [(x.objective, x.steps, x.seed, x.heldout) for x in r.runs] == [
        ("resnet:digits", 6, 3, False), ("resnet:digits", 6, 4, False)]
    assert all(0 <= x.accuracy <= 1 and not x.diverged for x in r.runs)
    assert dict(r.stage_seconds).keys() >= {"static", "numeric", "duplicate", "stability", "quality"}
    # the seed fixes initialization and data order: the same seed gives the same run
    again = train_rung(BN_RELU, SPEC, RungSpec(0, 0.5, (3,), quality=False))
    assert again.runs[0].accuracy == r.runs[0].accuracy and again.runs[0].loss == r.runs[0].loss


def test_a_higher_rung_skips_runs_it_has_and_the_top_adds_held_out_tasks():
    top = RungSpec(1, 1.0, (0, 1), top=True)
    assert [(t.objective, s, seed, h) for t, s, seed, h in planned_runs(SPEC, top)] == [
        ("resnet:digits", 12, 0, False), ("resnet:digits", 12, 1, False),
        ("mobilenet:digits", 12, 0, True), ("mobilenet:digits", 12, 1, True)]
    r = train_rung(BN_RELU, SPEC, top, None, frozenset({("resnet:digits", 12, 0)}))
    assert [(x.objective, x.seed, x.heldout) for x in r.runs] == [
        ("resnet:digits", 1, False), ("mobilenet:digits", 0, True), ("mobilenet:digits", 1, True)]
    assert "stability" not in dict(r.stage_seconds)      # only rung 0 runs the stress test


def test_a_task_floor_lifts_its_runs_at_every_rung_and_a_climb_reuses_them():
    floored = ProxyTask("mobilenet", "digits", replace(TINY, backbone_kwargs={}), min_steps_frac=1.0)
    spec = replace(SPEC, tasks=(*SPEC.tasks, floored), heldout_tasks=())
    low = RungSpec(0, 0.25, (0,), quality=False)
    # resnet at a quarter of its 12 steps; mobilenet never under its floor: all 12
    assert [(t.objective, s) for t, s, _, _ in planned_runs(spec, low)] == [
        ("resnet:digits", 3), ("mobilenet:digits", 12)]
    r = train_rung(BN_RELU, spec, low)
    done = frozenset((x.objective, x.steps, x.seed) for x in r.runs)
    # the full-length rung needs the floored task's seed-0 run no more: it was made at rung 0
    top = train_rung(BN_RELU, spec, RungSpec(1, 1.0, (0, 1)), None, done)
    assert [(x.objective, x.steps, x.seed) for x in top.runs] == [
        ("resnet:digits", 12, 0), ("resnet:digits", 12, 1), ("mobilenet:digits", 12, 1)]


def _run(objective: str, acc: float) -> RunScore:
    return RunScore(objective, objective.split(":")[0], objective.split(":")[1], 0, 10, acc, 1.0, acc == 0,
                    None, 0.1, 10.0, 100)


def test_quality_rejects_only_when_every_task_fails():
    spec = EvalSpec(tasks=(ProxyTask("resnet", "digits"), ProxyTask("transformer", "pydoc_chars")))
    good_img, bad_img = _run("resnet:digits", 0.9), _run("resnet:digits", 0.05)
    bad_txt = _run("transformer:pydoc_chars", 0.0)
    # GroupNorm that fails the text task but trains images: kept (its text score stays low)
    assert quality_verdict([good_img, bad_txt], spec) is None
    rej = quality_verdict([bad_img, bad_txt], spec)
    assert rej is not None and rej.stage is Stage.QUALITY
    assert "resnet:digits 0.050 <" in rej.reason and "(1 diverged)" in rej.reason


def test_rung_zero_rejects_an_unstable_layer_before_training():
    exploding = Graph.build(("exp", ["x"]), ("exp", [4]), ("mul", [5, 5]))
    r = train_rung(exploding, replace(SPEC, stability_steps=20), RungSpec(0, 1.0, (0,)))
    assert r.rejection is not None and r.rejection.stage in (Stage.STABILITY, Stage.ERROR)
    assert r.runs == ()


def test_an_exception_is_a_rejection_at_error_not_a_crash(monkeypatch):
    import workers.funnel as funnel

    def boom(*a, **k):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(funnel, "train", boom)
    r = train_rung(BN_RELU, SPEC, RungSpec(1, 1.0, (0,)))
    assert r.rejection is not None and r.rejection.stage is Stage.ERROR
    assert "kernel exploded" in r.rejection.reason


@pytest.mark.parametrize("task", ["digits", "shapes32", "pydoc_chars", "cifar10", "cifar100"])
@pytest.mark.parametrize("frac", [0.25, 1 / 3, 1.0])
def test_every_rung_has_a_whole_schedule_within_its_steps(task, frac):
    """A short rung is a small version of a long one: warmup to the peak, cosine to ~0 at its last step."""
    from workers.funnel import rung_steps
    from workers.train import lr_at, recipe_for

    steps = rung_steps(ProxyTask("resnet" if task != "pydoc_chars" else "transformer", task), frac)
    recipe = replace(recipe_for(task), steps=steps)
    lrs = [lr_at(s, recipe) for s in range(steps)]
    assert max(lrs) == pytest.approx(recipe.lr)
    assert lrs[-1] < 0.01 * recipe.lr
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in itertools.pairwise(lrs[:peak + 1]))   # warmup rises
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))   # then decays


def test_micro_batches_add_up_to_the_same_step_for_a_batch_independent_layer():
    """Gradient accumulation over micro-batches: the same update as the whole batch when the layer
    uses no batch statistic (LayerNorm), a different one when it does (BN-ReLU sees 4 images)."""
    from workers.train import train

    def run(layer: str, micro: int | None) -> float:
        g = ZOO[layer].graph
        assert g is not None
        from workers.evaluation import _factory
        cfg = TrainConfig(steps=3, batch_size=16, micro_batch=micro, backbone_kwargs={"widths": [8, 8, 8]})
        return train(_factory(g, SPEC, "nchw"), "resnet", "digits", cfg, seed=0).train_loss

    assert run("layernorm", 4) == pytest.approx(run("layernorm", None), rel=1e-4)
    assert run("bn_relu", 4) != pytest.approx(run("bn_relu", None), rel=1e-4)


def test_a_micro_batch_task_is_another_objective_whose_runs_never_stand_in_for_the_full_batch():
    """Two tasks that differ only in micro_batch: distinct objectives and labels, and a run of one
    (in `done`) never counts as a run of the other."""
    micro = ProxyTask("resnet", "digits", replace(TINY, batch_size=16, micro_batch=4))
    full = ProxyTask("resnet", "digits", replace(TINY, batch_size=16))
    spec = EvalSpec(tasks=(full, micro), stability_steps=3)
    assert spec.objectives == ("resnet:digits", "resnet:digits@mb4")
    assert (full.label, micro.label) == ("digits", "digits@mb4")
    rung = RungSpec(1, 0.25, (0,))        # 3 steps
    r = train_rung(BN_RELU, spec, rung)
    assert [(x.objective, x.backbone, x.task, x.steps, x.seed) for x in r.runs] == [
        ("resnet:digits", "resnet", "digits", 3, 0), ("resnet:digits@mb4", "resnet", "digits@mb4", 3, 0)]
    assert r.runs[0].loss != r.runs[1].loss         # BN-ReLU's statistics saw 16, then 4 images
    again = train_rung(BN_RELU, spec, rung, None, frozenset({r.runs[0].key}))
    assert [x.key for x in again.runs] == [r.runs[1].key]
    assert again.runs[0].loss == r.runs[1].loss

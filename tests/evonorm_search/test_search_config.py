"""Search configs validate, name the bad field, and turn into the workers' EvalSpec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from evonorm_search.config import PRESETS, SearchConfig, load_config


def error_locs(data: dict) -> list[str]:
    with pytest.raises(ValidationError) as info:
        SearchConfig.model_validate(data)
    return [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset: str) -> None:
    cfg = load_config(preset)
    spec = cfg.eval_spec()
    assert spec.objectives == tuple(cfg.objectives)
    assert len(spec.tasks) == len(cfg.tasks)


@pytest.mark.parametrize(("data", "loc"), [
    ({"budget": 0}, "budget"),
    ({"population_size": "many"}, "population_size"),
    ({"strategy": "annealing"}, "strategy"),
    ({"tasks": []}, "tasks"),
    ({"tasks": [{"backbone": "vgg", "task": "digits"}]}, "tasks.0.backbone"),
    ({"tasks": [{"backbone": "resnet", "task": "imagenet"}]}, "tasks.0.task"),
    ({"tasks": [{"backbone": "resnet", "task": "digits", "steps": -5}]}, "tasks.0.steps"),
    ({"rejection": {"quality_margin": -1}}, "rejection.quality_margin"),
    ({"seed_with_zoo": ["no_such_layer"]}, "seed_with_zoo"),
    ({"populaton_size": 10}, "populaton_size"),
])
def test_bad_fields_are_named(data: dict, loc: str) -> None:
    assert loc in error_locs(data)


def test_cross_field_rules_explain_themselves() -> None:
    with pytest.raises(ValidationError, match=r"tournament_size \(9\) must not exceed population_size \(4\)"):
        SearchConfig.model_validate({"population_size": 4, "tournament_size": 9})
    with pytest.raises(ValidationError, match="cannot train on the text task"):
        SearchConfig.model_validate({"tasks": [{"backbone": "resnet", "task": "pydoc_chars"}]})
    with pytest.raises(ValidationError, match="batch-dependent"):
        SearchConfig.model_validate({"batch_independent": True, "seed_with_zoo": ["bn_relu"]})
    with pytest.raises(ValidationError, match="outside the search space"):
        SearchConfig.model_validate({"seed_with_zoo": ["selu"]})


def test_config_round_trips_through_json() -> None:
    cfg = load_config("quick", {"budget": 7, "seed": 3})
    again = SearchConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.budget == 7 and again.seed == 3


def test_overrides_reach_the_eval_spec() -> None:
    cfg = load_config(None, {"tasks": [{"backbone": "resnet", "task": "digits", "steps": 17, "lr": 0.05}],
                             "rejection": {"stability": False, "quality_steps": 9}, "eps": 1e-3})
    spec = cfg.eval_spec()
    assert spec.tasks[0].config.steps == 17 and spec.tasks[0].config.lr == 0.05
    assert spec.stability is False and spec.quality_steps == 9 and spec.eps == 1e-3
    assert spec.layouts == ("nchw",)


def test_micro_batch_is_validated_against_the_batch_and_names_its_field() -> None:
    # shapes32's recipe trains batches of 64; digits' too, and a task's own batch_size wins
    for task, loc, match in [
        ({"backbone": "resnet", "task": "shapes32", "micro_batch": 3}, "tasks.0.micro_batch",
         r"micro_batch \(3\) must divide the shapes32 recipe's batch size for resnet \(64\)"),
        ({"backbone": "resnet", "task": "digits", "batch_size": 12, "micro_batch": 8}, "tasks.0.micro_batch",
         r"micro_batch \(8\) must divide batch_size \(12\)"),
        ({"backbone": "resnet", "task": "digits", "micro_batch": 0}, "tasks.0.micro_batch", "greater than"),
    ]:
        with pytest.raises(ValidationError, match=match):
            SearchConfig.model_validate({"tasks": [task]})
        assert error_locs({"tasks": [task]}) == [loc]
    ok = SearchConfig.model_validate(
        {"tasks": [{"backbone": "resnet", "task": "digits", "batch_size": 12, "micro_batch": 3}]})
    assert ok.eval_spec().tasks[0].config.micro_batch == 3


def test_a_micro_batch_task_is_its_own_objective() -> None:
    cfg = SearchConfig.model_validate({"tasks": [
        {"backbone": "resnet", "task": "shapes32"},
        {"backbone": "resnet", "task": "shapes32", "micro_batch": 4}],
        "heldout_tasks": [{"backbone": "resnet", "task": "digits", "micro_batch": 4}]})
    assert cfg.objectives == ["resnet:shapes32", "resnet:shapes32@mb4"]
    spec = cfg.eval_spec()
    assert spec.objectives == tuple(cfg.objectives)
    assert [(t.task, t.label, t.config.micro_batch) for t in spec.tasks] == [
        ("shapes32", "shapes32", None), ("shapes32", "shapes32@mb4", 4)]
    assert spec.heldout_tasks[0].objective == "resnet:digits@mb4"
    # held out means: not an objective, and the micro-batch is part of what that compares
    with pytest.raises(ValidationError, match=r"heldout_tasks \['resnet:shapes32@mb4'\]"):
        SearchConfig.model_validate({"tasks": cfg.model_dump()["tasks"],
                                     "heldout_tasks": [{"backbone": "resnet", "task": "shapes32",
                                                        "micro_batch": 4}]})
    held = [{"backbone": "resnet", "task": "shapes32", "micro_batch": 4}]
    SearchConfig.model_validate({"tasks": [{"backbone": "resnet", "task": "shapes32"}], "heldout_tasks": held})


def test_a_config_without_micro_batch_reads_as_before() -> None:
    cfg = load_config("quick")
    assert cfg.objectives == ["mobilenet:shapes32", "transformer:pydoc_chars"]
    assert all(t.micro_batch is None and t.label == t.task for t in cfg.tasks)
    assert "micro_batch" not in cfg.model_dump(exclude_unset=True)["tasks"][0]


def test_the_transformer_trains_its_full_steps_at_rung_zero_and_the_floor_is_validated() -> None:
    from workers.funnel import rung_steps

    for preset in ("quick", None):
        cfg = load_config(preset)
        steps = {t.objective: rung_steps(t, cfg.rungs[0].steps_frac) for t in cfg.eval_spec().tasks}
        full = {t.objective: rung_steps(t, 1.0) for t in cfg.eval_spec().tasks}
        assert steps["transformer:pydoc_chars"] == full["transformer:pydoc_chars"]
        assert steps["mobilenet:shapes32"] < full["mobilenet:shapes32"]
    # a task without a floor dumps as before; a floor outside (0, 1] names the field
    plain = load_config(None, {"tasks": [{"backbone": "resnet", "task": "digits"}]})
    assert "min_steps_frac" not in plain.model_dump(mode="json")["tasks"][0]
    for bad in (0, 1.5):
        with pytest.raises(ValidationError, match=r"tasks\.0\.min_steps_frac"):
            load_config(None, {"tasks": [{"backbone": "resnet", "task": "digits", "min_steps_frac": bad}]})


def test_the_small_batch_objectives_are_in_the_presets() -> None:
    cluster = load_config("cluster")
    micro = [t for t in cluster.tasks if t.micro_batch is not None]
    assert micro and all(t.objective.endswith(f"@mb{t.micro_batch}") for t in micro)
    small = load_config("small_batch")
    assert any(t.micro_batch is None for t in small.tasks) and any(t.micro_batch for t in small.tasks)
    assert len(set(small.objectives)) == len(small.objectives)
    # overriding the tasks keeps a held-out task only while it is not one of them, micro-batch included
    held = small.heldout_tasks[0]
    same = load_config("small_batch", {"tasks": [held.model_dump(exclude_defaults=True)]})
    assert same.heldout_tasks == []
    full = {**held.model_dump(exclude_defaults=True), "micro_batch": None}
    other = load_config("small_batch", {"tasks": [full]})
    assert other.heldout_tasks == [held]


def test_a_stored_config_that_no_longer_validates_still_names_its_micro_batch_objectives(tmp_path) -> None:
    from db import Store
    from evonorm_search.domain import SearchView

    tasks = [{"backbone": "resnet", "task": "digits"},
             {"backbone": "resnet", "task": "digits", "micro_batch": 4}]
    with Store(str(tmp_path / "s.db")) as store:
        record = store.create_search("legacy", {"old_field": 1, "tasks": tasks}, seed=0)
    view = SearchView.of(record)
    assert view.config is None and view.objectives.names == ["resnet:digits", "resnet:digits@mb4"]

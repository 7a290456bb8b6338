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

"""Training: every backbone with every factory and every zoo layer, determinism, divergence, the recipe."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
import torch
from worker_factories import FACTORIES, Explode, factory_for

from primitives.zoo import ZOO
from workers.backbones import NormActFactory, backbone_layout
from workers.evaluation import EvalSpec, ProxyTask, TaskScore, _factory
from workers.train import (
    RECIPES,
    TrainConfig,
    TrainResult,
    _augment,
    backbone_kwargs_for,
    lr_at,
    recipe_for,
    short_train,
    train,
)

# Small enough that the whole file runs in seconds on two cores.
TINY = {
    "resnet": ("digits", TrainConfig(steps=4, batch_size=32,
                                     backbone_kwargs={"widths": (8, 16), "blocks": (1, 1)})),
    "mobilenet": ("digits", TrainConfig(steps=4, batch_size=32, backbone_kwargs={
        "setting": ((1, 8, 1, 1), (2, 16, 1, 2)), "stem_channels": 8, "last_channels": 32})),
    "transformer": ("pydoc_chars", TrainConfig(steps=4, batch_size=8, eval_tokens=2048,
                                               backbone_kwargs={"block_size": 32, "n_embd": 32})),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("backbone", sorted(TINY))
def test_trains_a_few_steps(backbone: str, name: str) -> None:
    task, config = TINY[backbone]
    result = train(factory_for(name, backbone_layout(backbone)), backbone, task, config, seed=0)
    assert isinstance(result, TrainResult)
    assert not result.diverged and result.reason is None
    assert result.steps == 4 and result.num_params > 0
    assert 0.0 <= result.val_accuracy <= 1.0
    assert math.isfinite(result.val_loss) and math.isfinite(result.train_loss)
    assert result.steps_per_s > 0 and result.wall_time_s > 0 and result.device == "cpu"


def zoo_factory(name: str, layout: str) -> NormActFactory:
    """The factory a search trains a zoo layer with: `_factory` for graphs, the module otherwise."""
    layer = ZOO[name]
    if layer.graph is None:
        return layer.factory(layout)
    return _factory(layer.graph, EvalSpec(eps=layer.eps), layout)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("backbone", sorted(TINY))
def test_every_zoo_layer_trains_on_every_backbone(backbone: str, name: str) -> None:
    task, config = TINY[backbone]
    config = replace(config, steps=2)
    result = train(zoo_factory(name, backbone_layout(backbone)), backbone, task, config, seed=0)
    assert not result.diverged and result.reason is None, result.reason
    assert result.steps == 2 and result.num_params > 0
    assert 0.0 <= result.val_accuracy <= 1.0
    assert math.isfinite(result.val_loss) and math.isfinite(result.train_loss)
    assert result.steps_per_s > 0 and result.wall_time_s > 0
    metrics = TaskScore.of(ProxyTask(backbone, task, config), result).metrics()
    assert set(metrics) == {"accuracy", "loss", "steps", "steps_per_s", "wall_s", "params"}
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("backbone", sorted(TINY))
def test_deterministic_for_a_seed(backbone: str) -> None:
    task, config = TINY[backbone]
    factory = factory_for("evonorm_s0", backbone_layout(backbone))
    a, b = (train(factory, backbone, task, config, seed=7) for _ in range(2))
    assert (a.val_accuracy, a.val_loss, a.train_loss) == (b.val_accuracy, b.val_loss, b.train_loss)
    c = train(factory, backbone, task, config, seed=8)
    assert (c.val_loss, c.train_loss) != (a.val_loss, a.train_loss)


@pytest.mark.parametrize("backbone", sorted(TINY))
def test_divergence_is_reported_not_raised(backbone: str) -> None:
    task, config = TINY[backbone]
    result = train(Explode, backbone, task, config, seed=0)
    assert result.diverged
    assert result.reason is not None and "non-finite" in result.reason
    assert result.steps < config.steps  # type: ignore[operator]
    assert result.val_accuracy == 0.0 and result.val_loss == math.inf


def test_short_train_overrides_steps() -> None:
    task, config = TINY["resnet"]
    result = short_train(factory_for("bn_relu", "nchw"), "resnet", task, steps=6, config=config)
    assert result.steps == 6


def test_resnet_learns_digits() -> None:
    result = train(factory_for("bn_relu", "nchw"), "resnet", "digits",
                   TrainConfig(steps=40, batch_size=32))
    assert not result.diverged and result.val_accuracy > 0.4  # chance is 0.1


def test_shapes32_runs() -> None:
    config = TrainConfig(steps=2, batch_size=16)
    result = train(factory_for("evonorm_s0", "nchw"), "mobilenet", "shapes32", config, seed=0)
    assert not result.diverged and result.steps == 2


def test_backbone_must_match_task_kind() -> None:
    with pytest.raises(ValueError, match="cannot run"):
        train(factory_for("identity", "tokens"), "transformer", "digits", TrainConfig(steps=1))
    with pytest.raises(KeyError, match="unknown backbone"):
        train(factory_for("identity", "nchw"), "vgg", "digits", TrainConfig(steps=1))


def test_recipe_overrides_and_schedule() -> None:
    base = RECIPES["shapes32"]
    recipe = recipe_for("shapes32", TrainConfig(steps=100, lr=0.5, warmup_frac=0.05))
    assert (recipe.steps, recipe.lr, recipe.batch_size) == (100, 0.5, base.batch_size)
    assert recipe.label_smoothing == base.label_smoothing  # not overridden: kept
    assert recipe.backbones == base.backbones
    assert recipe_for("shapes32") == base
    # the ResNet's own recipe fields (gradient clipping); a config's value still wins
    resnet_clip = base.backbone_recipe["resnet"]["grad_clip"]
    assert recipe_for("shapes32", None, "resnet").grad_clip == resnet_clip != base.grad_clip
    assert recipe_for("shapes32", None, "mobilenet").grad_clip == base.grad_clip
    assert recipe_for("shapes32", TrainConfig(grad_clip=math.inf), "resnet").grad_clip == math.inf
    assert recipe_for("shapes32", None, "resnet").lr == base.lr
    with pytest.raises(ValueError, match=r"backbone_recipe\['resnet'\]: \['clip'\]"):
        replace(base, backbone_recipe={"resnet": {"clip": 1.0}})
    assert backbone_kwargs_for("shapes32", "resnet", TrainConfig(backbone_kwargs={"width_mult": 2.0})
                               ) == {"stem_stride": 2, "blocks": (3, 3, 3), "width_mult": 2.0,
                                     "in_channels": 3}
    assert backbone_kwargs_for("pydoc_chars", "transformer") == {"block_size": 64}
    assert lr_at(0, recipe) < lr_at(4, recipe) == pytest.approx(0.5)  # 5 warmup steps
    assert lr_at(99, recipe) < 0.01 * recipe.lr  # cosine to zero
    config = TrainConfig(steps=3, backbone_kwargs={"width_mult": 2.0})
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(TrainConfig(steps=3)) and hash(recipe) is not None
    result = train(factory_for("identity", "nchw"), "resnet", "digits", TrainConfig(steps=1))
    assert pickle.loads(pickle.dumps(result)) == result


def test_augment_keeps_shape_and_content() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    out = _augment(x, g)
    assert out.shape == x.shape
    # every output is a flipped, shifted copy: the unpadded centre survives somewhere
    assert torch.isclose(out.abs().sum(), x.abs().sum(), rtol=0.5)


def test_bfloat16_autocast_path_runs_on_cpu() -> None:
    # the GPU path's autocast, exercised on the CPU (channels_last stays GPU-only)
    task, config = TINY["resnet"]
    amp = TrainConfig(steps=2, batch_size=16, amp=True, backbone_kwargs=config.backbone_kwargs)
    result = train(factory_for("evonorm_s0", "nchw"), "resnet", task, amp, seed=0)
    assert not result.diverged and math.isfinite(result.val_loss)

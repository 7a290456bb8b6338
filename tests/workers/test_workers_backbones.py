"""Backbones: shapes, where the candidate goes, the reference arrangement, causality."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from worker_factories import FACTORIES, factory_for, ln_relu, token_bn_relu

from workers.backbones import (
    BACKBONES,
    GPT,
    PLACEMENTS,
    Affine,
    MobileNetV2,
    ResNet,
    backbone_layout,
    build_backbone,
    make_divisible,
)
from workers.backbones.resnet import BasicBlock


class Counting:
    """A factory that records the widths it was asked for."""

    def __init__(self) -> None:
        self.widths: list[int] = []

    def __call__(self, c: int) -> nn.Module:
        self.widths.append(c)
        return nn.Identity()


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("backbone", ["resnet", "mobilenet"])
def test_image_backbones_forward_and_backward(backbone: str, name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(backbone, factory_for(name, "nchw"), 10)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_transformer_forward_and_backward(placement: str, name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone("transformer", factory_for(name, "tokens"), 30, block_size=16,
                           n_layer=2, n_embd=32, placement=placement)
    idx = torch.randint(0, 30, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 30)
    logits.logsumexp(-1).mean().backward()
    assert model.wte.weight.grad is not None


def test_registry_and_layouts() -> None:
    assert set(BACKBONES) == {"resnet", "mobilenet", "transformer"}
    assert backbone_layout("resnet") == backbone_layout("mobilenet") == "nchw"
    assert backbone_layout("transformer") == "tokens"
    assert isinstance(build_backbone("resnet", ln_relu, 10, in_channels=1, widths=(8, 16),
                                     blocks=(1, 1)), ResNet)
    with pytest.raises(KeyError, match="unknown backbone"):
        build_backbone("vgg", ln_relu, 10)


def test_resnet_reference_arrangement() -> None:
    counting = Counting()
    model = ResNet(counting, 10, widths=(16, 32, 64), blocks=(1, 2, 1))
    # stem + the first conv of each of the 4 blocks; nothing after the last convs
    assert counting.widths == [16, 16, 32, 32, 64]
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 4
    for block in blocks:
        assert isinstance(block.affine2, Affine)
        assert torch.all(block.affine2.weight == 0)  # every block starts as the identity
    projections = [b for b in blocks if isinstance(b.shortcut, nn.Sequential)]
    assert len(projections) == 2
    for block in projections:
        affine = block.shortcut[1]
        assert isinstance(affine, Affine) and torch.all(affine.weight == 1)
    # the ReLU after the residual addition stays: block outputs are non-negative
    x = torch.randn(2, 16, 8, 8)
    assert (blocks[0](x) >= 0).all()
    # zero-initialised last affine: an identity-shortcut block is relu(x) at init
    torch.testing.assert_close(blocks[0](x), torch.relu(x))


def test_resnet_width_multiplier_and_depth() -> None:
    counting = Counting()
    ResNet(counting, 10, widths=(16, 32, 64), blocks=(3, 3, 3), width_mult=2.0)
    assert counting.widths == [32] + [32] * 3 + [64] * 3 + [128] * 3
    with pytest.raises(ValueError, match="same length"):
        ResNet(counting, 10, widths=(16, 32), blocks=(1,))


def test_mobilenet_sites_and_linear_bottleneck() -> None:
    counting = Counting()
    model = MobileNetV2(counting, 10, setting=((1, 16, 1, 1), (4, 24, 2, 2)),
                        stem_channels=16, last_channels=64)
    # stem; block 1 (t=1): depthwise only; blocks 2-3: expansion and depthwise; head conv
    assert counting.widths == [16, 16, 64, 64, 96, 96, 64]
    affines = [m for m in model.modules() if isinstance(m, Affine)]
    assert len(affines) == 3  # one projection per block, no candidate after it
    # zero-initialised only in the residual blocks (16->16 and the second 24->24)
    assert [bool(torch.all(a.weight == 0)) for a in affines] == [True, False, True]
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 3 and all(m.groups == m.in_channels for m in depthwise)


def test_mobilenet_width_multiplier() -> None:
    small = MobileNetV2(ln_relu_2d, 10, width_mult=0.5)
    large = MobileNetV2(ln_relu_2d, 10, width_mult=2.0)
    count = sum(p.numel() for p in small.parameters())
    assert sum(p.numel() for p in large.parameters()) > 4 * count
    assert make_divisible(24 * 0.5) == 16 and make_divisible(64) == 64


def ln_relu_2d(c: int) -> nn.Module:
    return nn.Sequential(nn.GroupNorm(1, c), nn.ReLU())


@pytest.mark.parametrize("placement,per_block,final", [
    ("pre", 2, 1), ("post", 2, 0), ("peri", 4, 1), ("mix", 2, 1)])
def test_transformer_placement_sites(placement: str, per_block: int, final: int) -> None:
    counting = Counting()
    model = GPT(counting, 20, n_layer=4, n_embd=32, placement=placement)
    assert len(counting.widths) == 4 * per_block + final
    kinds = [block.placement for block in model.blocks]
    expected = {"pre": ["pre"] * 4, "post": ["post"] * 4, "peri": ["peri"] * 4,
                "mix": ["post", "pre", "pre", "pre"]}[placement]
    assert kinds == expected
    mixed = GPT(counting, 20, n_layer=4, n_embd=32, placement="mix", mix_post_layers=2)
    assert [b.placement for b in mixed.blocks] == ["post", "post", "pre", "pre"]
    with pytest.raises(ValueError, match="placement"):
        GPT(counting, 20, placement="sandwich")


@pytest.mark.parametrize("name", ["evonorm_s0", "ln_relu", "token_bn_relu"])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_transformer_is_causal(placement: str, name: str) -> None:
    factory = {"evonorm_s0": factory_for("evonorm_s0", "tokens"), "ln_relu": ln_relu,
               "token_bn_relu": token_bn_relu}[name]
    torch.manual_seed(0)
    model = GPT(factory, 40, block_size=24, n_layer=3, n_embd=32, placement=placement)
    for block in model.blocks:  # make the zero-initialised parts matter
        for p in block.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    # BatchNorm mixes positions through batch statistics in training mode only
    model.train(name != "token_bn_relu")
    idx = torch.randint(0, 40, (2, 24))
    changed = idx.clone()
    changed[:, 15:] = (changed[:, 15:] + 7) % 40
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_transformer_rejects_long_sequences() -> None:
    model = GPT(ln_relu, 10, block_size=8, n_embd=16)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))

"""A downloaded layer (the exported `.py`) inside the models users bring: timm's and torchvision's.

timm builds norm+activation layers through its norm-act convention (`apply_act`, `act_layer`, `inplace`,
`drop_layer`, `device`, `dtype`); torchvision's builders take `norm_layer` and put their own ReLU after it.

Both libraries run here on torch 2.13.0+cpu: torchvision 0.28.0 is the release built for torch 2.13, and
timm 1.0.31 needs nothing newer. PyPI's torchvision wheels are built against CUDA torch, so beside the
CPU torch their compiled ops (nms, roi_align, image decoding) do not load, and torchvision's import
stops at registering a fake for `torchvision::nms`. Declaring those two op schemas (no kernels) lets the
import finish; the models use none of the compiled ops.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from primitives.export import export_bytes
from primitives.zoo import ZOO

_declared: list[Any] = []


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f"{name} is not installed ({e}); `make install` installs torchvision 0.28.0 and timm")
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "timm"))]:
        del sys.modules[mod]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declared.append(lib)   # a Library deregisters its ops when collected
    return importlib.import_module(name)


def downloaded(tmp_path: Path, zoo_name: str) -> type[nn.Module]:
    """The layer as a user gets it: the exported .py file, imported from disk."""
    layer = ZOO[zoo_name]
    assert layer.graph is not None
    path = tmp_path / f"{layer.class_name}.py"
    path.write_bytes(export_bytes(layer.graph, "py", name=layer.class_name, eps=layer.eps))
    spec = importlib.util.spec_from_file_location(f"downloaded_{zoo_name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[nn.Module] = getattr(module, layer.class_name)
    return cls


def train_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model.train()(x), torch.arange(len(x)) % 10)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return model.eval()(x)


@pytest.mark.parametrize("zoo_name", ["evonorm_s0", "bn_relu"])
@pytest.mark.parametrize("arch", ["efficientnet_b0", "regnetx_002"])
def test_a_downloaded_layer_is_a_timm_norm_layer(tmp_path: Path, zoo_name: str, arch: str) -> None:
    timm = _import("timm")
    layer = downloaded(tmp_path, zoo_name)
    torch.manual_seed(0)
    # timm's norm-act builders take a norm-act class it knows or a function; a lambda passes the class on
    model = timm.create_model(arch, pretrained=False, num_classes=10, norm_layer=lambda c, **kw: layer(c, **kw))
    ours = [m for m in model.modules() if isinstance(m, layer)]
    assert ours and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "every norm site is ours"
    out = train_step(model, torch.randn(4, 3, 64, 64))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    if arch == "efficientnet_b0":  # its blocks end in a norm without activation
        assert any(not m.apply_act for m in ours)


def test_timm_keywords_and_what_apply_act_false_means(tmp_path: Path) -> None:
    layer = downloaded(tmp_path, "evonorm_s0")
    drops: list[int] = []

    class Drop(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            drops.append(1)
            return x * 0.5

    with_act = layer(16, act_layer=nn.SiLU, act_kwargs={}, inplace=True, device="cpu", dtype=torch.float64)
    without = layer(16, apply_act=False, dtype=torch.float64)
    assert with_act.weight.dtype == torch.float64 and with_act.v1.dtype == torch.float64
    without.load_state_dict(with_act.state_dict())
    x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
    # The searched graph is the norm and its activation at once: apply_act=False computes the same graph
    torch.testing.assert_close(without(x), with_act(x))
    dropped = layer(16, drop_layer=Drop, dtype=torch.float64)
    dropped.load_state_dict(with_act.state_dict())
    torch.testing.assert_close(dropped(x), with_act(x) * 0.5)
    assert drops == [1]
    with pytest.raises(TypeError, match="nosuch"):
        layer(16, nosuch=1)


@pytest.mark.parametrize("zoo_name", ["evonorm_s0", "bn_relu"])
def test_a_downloaded_layer_in_a_torchvision_resnet(tmp_path: Path, zoo_name: str) -> None:
    models = _import("torchvision.models")
    layer = downloaded(tmp_path, zoo_name)
    torch.manual_seed(0)
    model = models.resnet18(num_classes=10, norm_layer=layer)
    ours = [m for m in model.modules() if isinstance(m, layer)]
    assert len(ours) == 20 and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    out = train_step(model, torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_torchvisions_relu_after_a_layer_that_ends_in_max_0_changes_nothing(tmp_path: Path) -> None:
    """What README says: torchvision applies its ReLU after `norm_layer`; after a layer whose graph ends in
    max(., 0) (BN-ReLU-like) that ReLU is the identity, after EvoNorm-S0 (negative outputs) it is not."""
    x = torch.randn(2, 8, 6, 6)
    for zoo_name, unchanged in (("bn_relu", True), ("evonorm_s0", False)):
        out = downloaded(tmp_path, zoo_name)(8).train()(x)
        assert torch.equal(torch.relu(out), out) is unchanged

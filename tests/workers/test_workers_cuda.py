"""On a CUDA device: generated layers compute what they do on the CPU, in float32 and under bfloat16
autocast with channels_last (how `workers.train` runs image models on a GPU), and a proxy training runs.

Marked `cuda` and skipped without a CUDA device; `benchmarks/gpu_check` runs them (`pytest -m cuda`).
"""

from __future__ import annotations

import pytest
import torch

from primitives.zoo import get_layer
from workers.train import TrainConfig, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

LAYERS = ["bn_relu", "gn_relu", "layernorm", "evonorm_b0", "evonorm_s0"]


def _pair(name: str, channels: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    cpu = get_layer(name).factory()(channels).train()
    gpu = get_layer(name).factory()(channels).train()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.cuda()


@pytest.mark.parametrize("name", LAYERS)
def test_generated_layer_on_cuda_matches_the_cpu(name: str) -> None:
    cpu, gpu = _pair(name, 64)
    x = torch.randn(8, 64, 16, 16, requires_grad=True)
    xg = x.detach().cuda().requires_grad_(True)
    y, yg = cpu(x), gpu(xg)
    torch.testing.assert_close(yg.cpu(), y, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(y)
    y.backward(grad)
    yg.backward(grad.cuda())
    assert x.grad is not None and xg.grad is not None
    torch.testing.assert_close(xg.grad.cpu(), x.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", LAYERS)
def test_generated_layer_under_bf16_autocast_and_channels_last(name: str) -> None:
    _, gpu = _pair(name, 64)
    x = torch.randn(8, 64, 16, 16, device="cuda")
    reference = gpu(x).float()
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = gpu(xl)
    assert torch.isfinite(y).all()
    # bfloat16 keeps 8 bits of mantissa: about 1% relative error on a standardized activation
    torch.testing.assert_close(y.float(), reference, rtol=5e-2, atol=5e-2)
    y.float().sum().backward()
    assert xl.grad is not None and torch.isfinite(xl.grad).all()


def test_a_short_proxy_training_runs_on_cuda_with_amp() -> None:
    result = train(get_layer("evonorm_s0").factory(), "resnet", "shapes32",
                   TrainConfig(steps=60, device="cuda"), seed=0)
    assert result.device.startswith("cuda") and not result.diverged, result
    assert 0.0 < result.val_accuracy <= 1.0

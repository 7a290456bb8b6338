"""Shared fixtures for the search-space tests.

No `__init__.py` here on purpose (see tests/db/conftest.py): a package named
`tests.primitives` would be imported as `primitives` and shadow the real
package, so the modules are named `test_prim_*.py` to stay unique.

Helpers that several files need are fixtures, since a conftest without a
package cannot be imported reliably.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from primitives.zoo import ZOO

IN_SPACE = [name for name, layer in ZOO.items() if layer.in_search_space]
OUT_OF_SPACE = [name for name, layer in ZOO.items() if not layer.in_search_space]


@pytest.fixture(autouse=True)
def _seeded_float32_single_thread() -> Iterator[None]:
    """Every test starts from the same RNG state, float32 default, and one intra-op thread.

    The tensors here are tiny: one thread is fastest for them and keeps the
    suite's time steady on a loaded 2-core machine (OpenMP threads spin-wait
    badly when the cores are shared). Restored afterwards.
    """
    torch.manual_seed(0)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def _randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter a non-default value (scales near 1, shifts near 0), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            if name.split(".")[-1] in ("weight", "v1"):
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)
    return module


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    return _randomize


@pytest.fixture(params=IN_SPACE)
def in_space_layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)

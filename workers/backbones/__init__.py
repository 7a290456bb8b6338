"""Backbones that host a candidate norm-act layer, by name.

Each backbone class takes `norm_act(num_features) -> nn.Module` first and
states the tensor layout its candidate sites see in `layout`: "nchw" for
the image models, "tokens" (B, T, C) for the Transformer; build the
candidate for that layout (`primitives.layer_class(graph, layout)`).
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from workers.backbones.layers import Affine, NormActFactory, make_divisible
from workers.backbones.mobilenet import MobileNetV2
from workers.backbones.resnet import ResNet
from workers.backbones.transformer import GPT, PLACEMENTS


class Backbone(Protocol):
    """What a backbone class is: the layout its candidate sites see, and a constructor called as
    `(norm_act: NormActFactory, num_classes: int, **config)` (config: the backbone's own keyword
    arguments, which differ per backbone, hence the open signature)."""

    @property
    def layout(self) -> str: ...

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module: ...


# The registry: a new backbone is a module here and one entry below; the search config's choices,
# the API's list and the evaluation all read this.
BACKBONES: dict[str, Backbone] = {
    "resnet": ResNet,
    "mobilenet": MobileNetV2,
    "transformer": GPT,
}


def backbone_layout(name: str) -> str:
    """"nchw" or "tokens": the layout a candidate for this backbone must accept."""
    return _get(name).layout


def build_backbone(name: str, norm_act: NormActFactory, num_classes: int,
                   **config: Any) -> nn.Module:
    """A backbone by name; num_classes is the vocabulary size for the Transformer.

    config goes to the backbone's constructor (e.g. widths=, width_mult= for
    the image models, n_layer=, placement= for the Transformer).
    """
    return _get(name)(norm_act, num_classes, **config)


def _get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


__all__ = [
    "BACKBONES",
    "GPT",
    "PLACEMENTS",
    "Affine",
    "Backbone",
    "MobileNetV2",
    "NormActFactory",
    "ResNet",
    "backbone_layout",
    "build_backbone",
    "make_divisible",
]

"""Backbones that host a candidate norm-act layer, by name.

Each backbone class takes `norm_act(num_features) -> nn.Module` first and
states the tensor layout its candidate sites see in `layout`: "nchw" for
the image models, "tokens" (B, T, C) for the Transformer; build the
candidate for that layout (`primitives.layer_class(graph, layout)`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workers.backbones.layers import Affine, NormActFactory, make_divisible
from workers.backbones.mobilenet import MobileNetV2
from workers.backbones.resnet import ResNet
from workers.backbones.transformer import GPT, PLACEMENTS

BACKBONES: dict[str, type[ResNet] | type[MobileNetV2] | type[GPT]] = {
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


def _get(name: str) -> type[ResNet] | type[MobileNetV2] | type[GPT]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


__all__ = [
    "BACKBONES",
    "GPT",
    "PLACEMENTS",
    "Affine",
    "MobileNetV2",
    "NormActFactory",
    "ResNet",
    "backbone_layout",
    "build_backbone",
    "make_divisible",
]

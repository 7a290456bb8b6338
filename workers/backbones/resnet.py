"""A CIFAR-style ResNet with basic blocks, built around a candidate norm-act layer.

Arrangement (the reference EvoNorm ResNets):

    stem:   conv3x3 -> norm_act
    block:  conv3x3 -> norm_act -> conv3x3 -> affine (scale starts at 0)
            shortcut: identity, or conv1x1 -> affine when the shape changes
            out = relu(main + shortcut)          # this ReLU is kept as is
    head:   global average pool -> linear

`affine` is a per-channel scale and shift with no normalization, so the
candidate is evaluated exactly where BatchNorm+ReLU would sit in a block's
first half. With the zero-initialised scale every block starts as the
identity, which is what makes the reference arrangement trainable for
layers that normalize poorly.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from workers.backbones.layers import Affine, NormActFactory, make_divisible


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 norm_act: NormActFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.act1 = norm_act(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.affine2 = Affine(out_channels, zero_init=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                Affine(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.affine2(self.conv2(self.act1(self.conv1(x))))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images: one stage per width, the first at full resolution.

    widths/blocks: channels and number of basic blocks per stage (each later
    stage halves the resolution). width_mult scales every width (the scaled
    widths are rounded to multiples of 8). stem_stride=2 quarters the compute for a CPU budget.
    The defaults (16/32/64 x 1 block) train a few hundred steps in seconds
    on a CPU; e.g. blocks=(3, 3, 3) is ResNet-20, (5, 5, 5) ResNet-32.
    """

    layout: ClassVar[str] = "nchw"

    def __init__(self, norm_act: NormActFactory, num_classes: int = 10, *, in_channels: int = 3,
                 widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 1),
                 width_mult: float = 1.0, stem_stride: int = 1) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
        if width_mult != 1.0:
            widths = tuple(make_divisible(w * width_mult) for w in widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
            norm_act(widths[0]),
        )
        layers: list[nn.Module] = []
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(channels, width, stride, norm_act))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))

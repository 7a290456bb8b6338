"""A small MobileNetV2 (inverted residuals, linear bottlenecks) around a candidate norm-act.

Arrangement:

    stem:   conv3x3 -> norm_act
    block:  [conv1x1 expand -> norm_act] -> depthwise conv3x3 -> norm_act
            -> conv1x1 project -> affine            (the linear bottleneck)
            out = x + block(x) when stride 1 and same width, else block(x)
    head:   conv1x1 -> norm_act -> global average pool -> linear

The projection keeps MobileNetV2's "no activation" by using an affine-only
norm (per-channel scale and shift, no normalization), as the reference
ResNets do after their last convolution. Its scale starts at 0 only in
residual blocks, where that makes the block start as the identity; in the
other blocks a zero scale would cut the signal to every later layer.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from workers.backbones.layers import Affine, NormActFactory, make_divisible

# (expansion t, output channels c, repeats n, first stride s), as in the paper's
# table, narrowed and shortened so a CPU trains it in seconds. The ImageNet
# setting is ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
# (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)) with stem 32, last 1280.
SMALL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 2),
    (4, 64, 1, 2),
)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 norm_act: NormActFactory) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), norm_act(hidden)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            norm_act(hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            Affine(out_channels, zero_init=self.use_residual),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images.

    setting: (t, c, n, s) rows as in the paper; width_mult scales every width
    (rounded to multiples of 8, as in the paper); stem_stride 1 suits 32x32
    inputs (CIFAR), 2 suits ImageNet-sized ones.
    """

    layout: ClassVar[str] = "nchw"

    def __init__(self, norm_act: NormActFactory, num_classes: int = 10, *, in_channels: int = 3,
                 setting: tuple[tuple[int, int, int, int], ...] = SMALL_SETTING,
                 stem_channels: int = 16, last_channels: int = 128, width_mult: float = 1.0,
                 stem_stride: int = 1) -> None:
        super().__init__()
        channels = make_divisible(stem_channels * width_mult)
        last = make_divisible(last_channels * max(1.0, width_mult))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 3, stem_stride, 1, bias=False),
            norm_act(channels),
        ]
        for t, c, n, s in setting:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t, norm_act))
                channels = out
        layers += [nn.Conv2d(channels, last, 1, bias=False), norm_act(last)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))

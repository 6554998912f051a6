"""FPN neck: C3..C5 -> P3..P7 (strides 8..128), as mmdetection's FPN with the VFNet settings.

start_level=1 (C2 unused), num_outs=5, extra convs on the P5 *output*, ReLU before the P7 conv
only, no norm, every conv with a bias. Keys: `lateral_convs.{0,1,2}.conv.*`,
`fpn_convs.{0..4}.conv.*` (fpn_convs.3 makes P6 from P5, fpn_convs.4 makes P7 from ReLU(P6)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvModule


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvModule:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    return ConvModule(conv, out_channels, relu=False)


class FPN(nn.Module):
    """forward([C3, C4, C5]) -> [P3, P4, P5, P6, P7], each [B, out_channels, h_l, w_l]."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList([_conv(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList(
            [_conv(out_channels, out_channels, 3) for _ in in_channels] + [_conv(out_channels, out_channels, 3, stride=2) for _ in range(2)]
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the upsampled coarser level
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        p6 = self.fpn_convs[3](outs[-1])
        p7 = self.fpn_convs[4](torch.relu(p6))
        return outs + [p6, p7]

"""Small building blocks whose parameter names match mmcv's, so official checkpoints load strictly.

- `ConvModule`: conv -> optional GroupNorm (`gn`) -> optional ReLU; keys `conv.*`, `gn.*`.
- `Scale`: one learnable 0-dim scalar (`scale`), as mmcv.cnn.Scale.
- `DeformConv2d`: DCNv1 (offsets given by the caller), weight only, as mmcv.ops.DeformConv2d.
- `ModulatedDeformConv2d`: DCNv2 predicting its own offsets and mask with a nested `conv_offset`,
  as mmcv.ops.ModulatedDeformConv2dPack.

Both deformable convolutions call `torchvision.ops.deform_conv2d`, whose offset layout is mmcv's:
offset [B, 2*9, H, W] with channel 2k = dy and 2k+1 = dx for kernel tap k = 3*i + j (row-major).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class Scale(nn.Module):
    """Multiply by a learnable scalar (a 0-dim parameter, as in the official checkpoints)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class DeformConv2d(nn.Module):
    """3x3 deformable convolution (DCNv1), no bias; the caller supplies the offsets.

    forward(x [B, C_in, H, W], offset [B, 18, H, W]) -> [B, C_out, H, W] (stride 1, padding 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, padding=(self.padding, self.padding))


class ModulatedDeformConv2d(nn.Module):
    """3x3 modulated deformable convolution (DCNv2) that predicts its own offsets and mask.

    `conv_offset` (a plain 3x3 conv with bias) gives 27 channels: the first 18 are the offsets in
    the interleaved (dy, dx) layout, the last 9 pass through a sigmoid to become the mask.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.conv_offset = nn.Conv2d(in_channels, 27, 3, stride=stride, padding=1, bias=True)
        nn.init.zeros_(self.conv_offset.weight)  # start as a plain conv, as mmcv does
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_and_mask = self.conv_offset(x)  # [B, 27, H', W']
        offset, mask_logits = offset_and_mask.split((18, 9), dim=1)  # [B, 18, H', W'], [B, 9, H', W']
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=(self.stride, self.stride),
            padding=(1, 1),
            mask=mask_logits.sigmoid(),
        )


class ConvModule(nn.Module):
    """conv -> [GroupNorm] -> [ReLU], named like mmcv's ConvModule (`conv`, `gn`).

    `conv` may be any module mapping [B, C_in, H, W] -> [B, C_out, H, W] (a Conv2d or a
    ModulatedDeformConv2d); `norm_groups=0` means no norm, `relu=False` no activation.
    """

    def __init__(self, conv: nn.Module, out_channels: int, norm_groups: int = 0, relu: bool = True):
        super().__init__()
        self.conv = conv
        self.gn = nn.GroupNorm(norm_groups, out_channels) if norm_groups else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.gn is not None:
            x = self.gn(x)
        return torch.relu(x) if self.relu else x

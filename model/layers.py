"""Small building blocks whose parameter names match mmcv's, so official checkpoints load strictly.

- `ConvModule`: conv -> optional GroupNorm (`gn`) -> optional ReLU; keys `conv.*`, `gn.*`.
- `Scale`: one learnable 0-dim scalar (`scale`), as mmcv.cnn.Scale.
- `ModulatedDeformConv2d`: DCNv2 predicting its own offsets and mask with a nested `conv_offset`,
  as mmcv.ops.ModulatedDeformConv2dPack.

`deform_conv2d` below is the one deformable convolution of the model: DCNv2 here, and the head's
star convolution (head.py, StarDeformConv2d) with offsets from the initial box. Its offset layout is
mmcv's and torchvision's: offset [B, 2*9, H, W] with channel 2k = dy and 2k+1 = dx for kernel tap
k = 3*i + j (row-major).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import ops

_TAP_ROW = (-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0)  # i - 1 for tap k = 3 * i + j
_TAP_COL = (-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0)  # j - 1


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """3x3 deformable convolution, padding 1, one offset group (DCNv1; DCNv2 with `mask`).

    x [B, C_in, H, W], offset [B, 18, H', W'], weight [C_out, C_in / groups, 3, 3],
    mask [B, 9, H', W'] or None -> [B, C_out, H', W'], H' = ceil(H / stride).

    Tap k of output cell (y, x) samples x bilinearly at (y*stride + i-1 + dy_k, x*stride + j-1 + dx_k),
    zero outside the map. Without gradients this is `torchvision.ops.deform_conv2d` (what the ONNX
    exporter maps to the standard DeformConv). When gradients are needed, the same sampling is done
    with `grid_sample` plus a matrix product: torchvision's CPU backward is about 10x slower, which
    decides whether a model trains on a CPU in hours. The two agree to float32 rounding
    (tests/model/test_star_dcn.py checks values and gradients).
    """
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, offset, weight, mask))
    if not needs_grad:
        return ops.deform_conv2d(x, offset, weight, bias, stride=(stride, stride), padding=(1, 1), mask=mask)
    batch, channels = x.shape[:2]
    out_h, out_w = offset.shape[-2:]
    columns = deform_columns(x, offset, stride)  # [B, C_in, 9, H', W']
    if mask is not None:
        columns = columns * mask[:, None]
    groups = channels // weight.shape[1]
    columns = columns.view(batch, groups, channels // groups * 9, out_h * out_w)  # [B, g, C_in/g * 9, H'W']
    kernels = weight.view(groups, weight.shape[0] // groups, -1)  # [g, C_out/g, C_in/g * 9]
    out = torch.einsum("gok,bgkn->bgon", kernels, columns).reshape(batch, weight.shape[0], out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def deform_columns(x: torch.Tensor, offset: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The 9 taps of a 3x3 deformable convolution (padding 1), sampled: x [B, C_in, H, W], offset
    [B, 18, H', W'] -> [B, C_in, 9, H', W'], tap k of output cell (y, x) being x sampled bilinearly at
    (y*stride + i-1 + dy_k, x*stride + j-1 + dx_k), k = 3*i + j, zero outside the map: one
    `grid_sample` (ONNX GridSample) for all taps. Its view [B, C_in * 9, H', W'] is in the order of a
    weight [C_out, C_in, 3, 3] viewed as [C_out, C_in * 9], so a 1x1 convolution by that view (or a
    matrix product) completes the deformable convolution."""
    batch, channels, height, width = x.shape
    out_h, out_w = offset.shape[-2:]
    rows = (torch.arange(out_h, device=x.device, dtype=x.dtype) * stride).view(1, 1, out_h, 1)
    cols = (torch.arange(out_w, device=x.device, dtype=x.dtype) * stride).view(1, 1, 1, out_w)
    taps = offset.view(batch, 9, 2, out_h, out_w)  # [B, 9 taps, (dy, dx), H', W']
    tap_row = torch.tensor(_TAP_ROW, device=x.device, dtype=x.dtype).view(1, 9, 1, 1)
    tap_col = torch.tensor(_TAP_COL, device=x.device, dtype=x.dtype).view(1, 9, 1, 1)
    sample_y = rows + tap_row + taps[:, :, 0]  # [B, 9, H', W'] in input pixels
    sample_x = cols + tap_col + taps[:, :, 1]
    # grid_sample (align_corners=False) puts pixel p's centre at (2p + 1) / size - 1
    grid = torch.stack([(2 * sample_x + 1) / width - 1, (2 * sample_y + 1) / height - 1], dim=-1)  # [B, 9, H', W', 2]
    sampled = F.grid_sample(x, grid.view(batch, 9 * out_h, out_w, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(batch, channels, 9, out_h, out_w)  # [B, C_in, 9 * H', W'] -> [B, C_in, 9, H', W']


class Scale(nn.Module):
    """Multiply by a learnable scalar (a 0-dim parameter, as in the official checkpoints)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


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
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, mask=mask_logits.sigmoid())


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

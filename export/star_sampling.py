"""The star convolution written so that ONNX Runtime's quantizer quantizes it: `vfnet export onnx
--sampled-star` (OpenVINO's --sampled-star is star_gather.py, which its int8 runs faster).

A star deformable convolution (model/head.py's StarDeformConv2d) is, exactly, 9 bilinear samplings
of the features at the star points of each cell followed by a 1x1 convolution over the 9 C sampled
channels (the GPU kernel's im2col split). In the standard export it is one `DeformConv` node, which
neither ONNX Runtime nor OpenVINO has an integer kernel for, so it stays float32 in every int8
artifact. Written as the samplings (one ONNX `GridSample`, bilinear, zero padding: model/layers.py's
`deform_columns`, the training path's own sampling) and a standard `Conv` with a 1x1 kernel, the
convolution is one the quantizers treat like any other; only the sampling stays float.

The function is the same: the 1x1 weight is the 3x3 weight [C_out, C_in, 3, 3] viewed as
[C_out, C_in * 9, 1, 1], in `deform_columns`' channel order. The _mdconv presets' DCNv2 tower layers
stay `DeformConv` (they predict their own offsets and masks, and are not the star).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfnet.model import VFNet
from vfnet.model.head import StarDeformConv2d, star_dcn_offset
from vfnet.model.layers import deform_columns

from .prepare import with_star_convs_replaced


class SampledStarConv(nn.Module):
    """StarDeformConv2d's function as samplings and a 1x1 convolution: forward(x [B, C_in, H, W],
    bbox_init [B, 4, H, W] (l, t, r, b) pixels, stride) -> [B, C_out, H, W]."""

    def __init__(self, conv: StarDeformConv2d):
        super().__init__()
        self.gradient_mul = conv.gradient_mul
        out_channels, in_channels = conv.weight.shape[:2]
        self.weight = nn.Parameter(conv.weight.detach().reshape(out_channels, in_channels * 9, 1, 1).clone())  # [C_out, C_in, 3, 3] -> [C_out, 9 C_in, 1, 1]

    def forward(self, x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
        offset = star_dcn_offset(bbox_init, stride, self.gradient_mul).to(x.dtype)  # [B, 18, H, W]
        columns = deform_columns(x, offset)  # [B, C_in, 9, H, W]
        batch, channels, taps, height, width = columns.shape
        return F.conv2d(columns.reshape(batch, channels * taps, height, width), self.weight.to(x.dtype))  # [B, 9 C_in, H, W] -> [B, C_out, H, W]


def with_sampled_stars(model: VFNet) -> VFNet:
    """A copy of `model` whose star convolutions are SampledStarConv (ValueError for a model without any)."""
    return with_star_convs_replaced(model, SampledStarConv, "--sampled-star")

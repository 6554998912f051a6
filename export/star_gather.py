"""The star convolution as OpenVINO's int8 runs it fastest: `vfnet export openvino --sampled-star`.

The ONNX form (star_sampling.py: GridSample, then a 1x1 convolution) hands OpenVINO a planar
[B, 9 C, H, W] sampled tensor that its int8 convolution first reorders to channels-last: on R50 at
800x1088 that reorder cost more than the float DeformableConvolution it replaced saved. Here nothing
the size of the sampled tensor changes layout:

- The star of cell (y, x) with box (l, t, r, b) (model/head.py's star_dcn_offset) samples the rows
  {y - t', y, y + b'} times the columns {x - l', x, x + r'} (t' = t / stride, ...). Bilinearly, a
  fractional row reads two whole pixel rows and the middle one reads one: 5 pixel rows times 5
  pixel columns, 25 "corners" a cell instead of 36, each with the weight (row weight) x (column
  weight) and each belonging to one of the 9 taps.
- One Gather reads the 25 corner pixels of every cell from the features viewed channels-last,
  [B*H*W + 1, C] (the extra row is zeros: a corner outside the map reads it), and they are
  multiplied by their weights: [B, H*W, 25, C].
- One matrix product by the 3x3 weight repeated per corner, [25 C_in, C_out], sums the corners and
  the taps at once. It is a MatMul with a constant weight, which NNCF quantizes and OpenVINO runs as
  an int8 FullyConnected (AMX or VNNI): 25/9 the multiply-adds of the 1x1 convolution, cheap on CPUs
  with int8 units, and the corners need no summing of their own.

Whole pixels are integers: floor(y - t') = y + floor(-t') is computed in int64 and only the
fractions are floats, so the positions stay exact when the runtime computes the float arithmetic in
bfloat16 (8 significant bits: whole rows above 256 would not be representable, and above 128 not
their halves). The function is the DeformConv's; int8 rounds the weighted corners rather than the
sampled values. Measured against the GridSample form and the float DeformableConvolution in
docs/benchmarks.md.
"""

from __future__ import annotations

import torch
from torch import nn

from vfnet.model import VFNet
from vfnet.model.head import StarDeformConv2d

from .prepare import with_star_convs_replaced

STAR_OF_PIXEL = (0, 0, 1, 2, 2)  # which star row (column) each of the 5 pixel rows (columns) serves: top, top, middle, bottom, bottom
TAP_OF_CORNER = [3 * row + column for row in STAR_OF_PIXEL for column in STAR_OF_PIXEL]  # corner 5 r + c -> tap k = 3 i + j


def star_pixels(before: torch.Tensor, after: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: the 5 whole pixels the star's 3 points of each cell read and their bilinear
    weights. before, after [B, H, W]: the star's first and last point relative to the cell (-t', b'
    for rows; -l', r' for columns), in cells; `cell`: each cell's own index along this axis, int64,
    broadcasting to [B, H, W]. Returns pixels int64 [B, 5, H, W], weights [B, 5, H, W]."""
    whole_before, whole_after = before.floor(), after.floor()
    part_before, part_after = before - whole_before, after - whole_after  # in [0, 1)
    first, last = cell + whole_before.long(), cell + whole_after.long()  # [B, H, W] exact
    pixels = torch.stack([first, first + 1, cell.expand_as(first), last, last + 1], dim=1)  # [B, 5, H, W]
    one = torch.ones_like(part_before)
    weights = torch.stack([1 - part_before, part_before, one, 1 - part_after, part_after], dim=1)  # [B, 5, H, W]
    return pixels, weights


def star_corners(x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
    """The star's 25 corner pixels of every cell, bilinearly weighted: x [B, C, H, W], bbox_init
    [B, 4, H, W] (l, t, r, b) input pixels -> [B, H*W, 25, C], corner 5 r + c being pixel row r
    and pixel column c of star_pixels; a corner outside the map reads zeros."""
    batch, channels, height, width = x.shape
    cells = height * width
    features = x.permute(0, 2, 3, 1).reshape(batch * cells, channels)  # [B, C, H, W] -> [B*H*W, C]
    features = torch.cat([features, features.new_zeros(1, channels)])  # [B*H*W + 1, C], the last row zeros
    left, top, right, bottom = (bbox_init / stride).unbind(dim=1)  # each [B, H, W], in cells
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    row, row_weight = star_pixels(-top, bottom, rows)  # [B, 5, H, W] each
    col, col_weight = star_pixels(-left, right, cols)
    corner_row, corner_col = row[:, :, None], col[:, None, :]  # [B, 5, 1, H, W], [B, 1, 5, H, W]
    inside = (corner_row >= 0) & (corner_row < height) & (corner_col >= 0) & (corner_col < width)  # [B, 5, 5, H, W]
    image_start = (torch.arange(batch, device=x.device) * cells).view(batch, 1, 1, 1, 1)
    index = torch.where(inside, image_start + corner_row * width + corner_col, batch * cells)  # [B, 5, 5, H, W] rows of `features`
    weight = row_weight[:, :, None] * col_weight[:, None, :]  # [B, 5, 5, H, W]
    gathered = features[index.reshape(batch, 25, cells).transpose(1, 2).reshape(-1)]  # [B, 25, H*W] -> [B*H*W*25, C], cell-major
    weight = weight.reshape(batch, 25, cells).transpose(1, 2).reshape(batch, cells, 25, 1)  # [B, 5, 5, H, W] -> [B, H*W, 25, 1]
    return gathered.view(batch, cells, 25, channels) * weight.to(x.dtype)


class GatheredStarConv(nn.Module):
    """StarDeformConv2d's function as star_corners and one matrix product: forward(x [B, C_in, H, W],
    bbox_init [B, 4, H, W] (l, t, r, b) pixels, stride) -> [B, C_out, H, W]."""

    def __init__(self, conv: StarDeformConv2d):
        super().__init__()
        out_channels, in_channels = conv.weight.shape[:2]
        per_tap = conv.weight.detach().permute(2, 3, 1, 0).reshape(9, in_channels, out_channels)  # [C_out, C_in, 3, 3] -> [9 taps, C_in, C_out]
        self.weight = nn.Parameter(per_tap[TAP_OF_CORNER].reshape(25 * in_channels, out_channels).clone())  # [25, C_in, C_out] -> [25 C_in, C_out]

    def forward(self, x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
        batch, channels, height, width = x.shape
        corners = star_corners(x, bbox_init, stride).reshape(batch, height * width, 25 * channels)  # [B, H*W, 25, C] -> [B, H*W, 25 C]
        out = corners @ self.weight.to(x.dtype)  # [B, H*W, C_out]
        return out.transpose(1, 2).reshape(batch, -1, height, width)  # [B, H*W, C_out] -> [B, C_out, H, W]


def with_gathered_stars(model: VFNet) -> VFNet:
    """A copy of `model` whose star convolutions are GatheredStarConv (ValueError for a model without any)."""
    return with_star_convs_replaced(model, GatheredStarConv, "--sampled-star")

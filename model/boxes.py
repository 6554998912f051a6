"""Anchor points and (l, t, r, b) -> xyxy decoding, in input-image pixels.

VFNet uses ATSS-style points: the point of feature cell (i, j) on a level of stride s sits at
pixel (x, y) = (j * s, i * s) -- offset 0, not s / 2 (official `use_atss=True`).
"""

from __future__ import annotations

import torch


def level_points(height: int, width: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """[height * width, 2] anchor points (x, y) = (j * stride, i * stride), row-major (y outer)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [h, w] each
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # [h*w, 2]


def distance2bbox(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """points [..., 2] (x, y) and distances [..., 4] (l, t, r, b) -> boxes [..., 4] (x1, y1, x2, y2)."""
    x, y = points[..., 0], points[..., 1]
    left, top, right, bottom = distances.unbind(dim=-1)
    return torch.stack([x - left, y - top, x + right, y + bottom], dim=-1)


def clamp_to_size(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """Clamp xyxy boxes [B, N, 4] to [0, w] x [0, h] of each image; image_sizes [B, 2] is (h, w).

    The bound is w (not w - 1), as the official code clamps to the resized, unpadded shape.
    """
    h = image_sizes[:, 0].to(boxes.dtype)
    w = image_sizes[:, 1].to(boxes.dtype)
    upper = torch.stack([w, h, w, h], dim=-1)[:, None, :]  # [B, 1, 4]
    return torch.minimum(boxes.clamp(min=0), upper)

"""VFNetHead: towers, initial box, star-shaped deformable convs, refined box and IACS logits.

Per FPN level l (stride s_l, reg_denom d_l), on the same input P_l:

    cls_feat  = 3 x [conv3x3 -> GN -> ReLU](P_l)            (cls_convs)
    reg_feat  = 3 x [conv3x3 -> GN -> ReLU](P_l)            (reg_convs)
    bbox_init = exp(scale_l * vfnet_reg(vfnet_reg_conv(reg_feat))) * d_l
    bbox_refine = exp(scale_refine_l * vfnet_reg_refine(ReLU(refine_dconv(reg_feat, bbox_init, s_l))))
                  * bbox_init.detach()
    cls_logits  = vfnet_cls(ReLU(cls_dconv(cls_feat, bbox_init, s_l)))

where both dconvs are StarDeformConv2d: a 3x3 deformable conv whose offsets are
star_dcn_offset(bbox_init, s_l), the star of each cell's initial box.

Boxes are (l, t, r, b): distances in input-image pixels from the level's anchor point (j*s, i*s)
to the left, top, right and bottom edges. IACS = sigmoid(cls_logits).

The ablation's variants are constructor settings (VFNetConfig), each choosing modules, never a
branch on a flag passed to `forward`; parameter names stay the official ones:
- `star_dcn=False`: GridConv2d (a plain 3x3 conv with the same `weight`) in place of both dconvs;
- `box_refinement=False`: no vfnet_reg_refine_dconv / vfnet_reg_refine / scales_refine; the final
  box is bbox_init itself;
- `centerness=True`: `conv_centerness` (FCOS's name), a 3x3 conv on reg_feat giving one logit per
  cell; the test-time score becomes sigmoid(cls_logits) * sigmoid(centerness).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VFNetConfig
from .layers import ConvModule, ModulatedDeformConv2d, Scale, deform_conv2d


def star_dcn_offset(bbox_pred: torch.Tensor, stride: int, gradient_mul: float = 0.1) -> torch.Tensor:
    """Offsets that make a 3x3 deformable conv sample the star of a box.

    bbox_pred: [B, 4, H, W] (l, t, r, b) in input pixels. Returns [B, 18, H, W]: for kernel tap
    k = 3*i + j, channel 2k is dy and 2k+1 is dx, relative to the regular grid (i-1, j-1). With
    padding 1 the tap then samples feature cell (y + dy_k + i - 1, x + dx_k + j - 1), i.e. the rows
    {y - t', y, y + b'} times the columns {x - l', x, x + r'} (t' = t / stride, ...): the 4 box
    corners, the 4 points where the lines through the anchor cross the edges, and the anchor.
    Only `gradient_mul` of the gradient flows back into `bbox_pred`. The official code writes this
    as 0.9 * detach(x) + 0.1 * x, which rounds (48 px becomes 48.000004); the form below has the
    same gradient and leaves the value exact, so the star lands exactly on the box.
    """
    grad_scaled = bbox_pred.detach() + gradient_mul * (bbox_pred - bbox_pred.detach())  # value == bbox_pred
    scaled = grad_scaled / stride
    left, top, right, bottom = scaled.unbind(dim=1)  # each [B, H, W]
    zero = torch.zeros_like(left)
    dy = torch.stack([-top, -top, -top, zero, zero, zero, bottom, bottom, bottom], dim=1)  # [B, 9, H, W]
    dx = torch.stack([-left, zero, right, -left, zero, right, -left, zero, right], dim=1)  # [B, 9, H, W]
    target = torch.stack([dy, dx], dim=2).flatten(1, 2)  # [B, 9, 2, H, W] -> [B, 18, H, W] interleaved
    grid = torch.tensor([-1.0, 0.0, 1.0], dtype=bbox_pred.dtype, device=bbox_pred.device)
    base = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)  # [3, 3, 2]: (i-1, j-1)
    return target - base.reshape(1, 18, 1, 1)


class StarDeformConv2d(nn.Module):
    """The head's deformable convolution: 3x3 DCNv1 without bias (as mmcv.ops.DeformConv2d; its one
    parameter is `weight` [C_out, C_in, 3, 3]) sampling the star of each cell's initial box.

    forward(x [B, C_in, H, W], bbox_init [B, 4, H, W] (l, t, r, b) pixels, stride) -> [B, C_out, H, W].
    The plugin export (export/plugin_graph.py) writes it as one TensorRT StarDeformConv node fed by
    x, bbox_init and the weight, with no offset tensor.
    """

    def __init__(self, in_channels: int, out_channels: int, gradient_mul: float = 0.1):
        super().__init__()
        self.gradient_mul = gradient_mul
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
        offset = star_dcn_offset(bbox_init, stride, self.gradient_mul).to(x.dtype)  # [B, 18, H, W]
        return deform_conv2d(x, offset, self.weight)


class GridConv2d(nn.Module):
    """Ablation (d)'s stand-in for StarDeformConv2d: the same 3x3 conv without bias and the same
    parameter (`weight` [C_out, C_in, 3, 3]), sampling the regular 3x3 grid around each cell.

    forward(x [B, C_in, H, W], bbox_init, stride) -> [B, C_out, H, W]; bbox_init and stride are
    taken (StarDeformConv2d's interface) and ignored.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=1)


class LevelOutputs(NamedTuple):
    """One FPN level's head outputs. Boxes are (l, t, r, b) pixel distances from the level's points.

    cls_logits [B, C, h, w]; bbox_init [B, 4, h, w]; bbox_refine [B, 4, h, w] (the final box: bbox_init
    itself when the head has no refinement); centerness [B, 1, h, w] logits, or None without that branch.
    """

    cls_logits: torch.Tensor
    bbox_init: torch.Tensor
    bbox_refine: torch.Tensor
    centerness: torch.Tensor | None = None

    def scores(self) -> torch.Tensor:
        """The test-time ranking score [B, C, h, w] float32: the IACS sigmoid(cls_logits), or
        sigmoid(cls_logits) * sigmoid(centerness) (broadcast over classes) with a centerness branch."""
        scores = self.cls_logits.float().sigmoid()
        if self.centerness is None:
            return scores
        return scores * self.centerness.float().sigmoid()


def _tower_conv(in_channels: int, config: VFNetConfig, deformable: bool) -> ConvModule:
    if deformable:
        conv = ModulatedDeformConv2d(in_channels, config.feat_channels)
    else:
        conv = nn.Conv2d(in_channels, config.feat_channels, 3, padding=1, bias=False)
    return ConvModule(conv, config.feat_channels, norm_groups=config.norm_groups)


class VFNetHead(nn.Module):
    """forward([P3..P7]) -> per level LevelOutputs(cls_logits [B, C, h, w], bbox_init [B, 4, h, w],
    bbox_refine [B, 4, h, w], centerness [B, 1, h, w] or None); boxes as (l, t, r, b) pixel distances
    (see the module docstring)."""

    def __init__(self, in_channels: int, config: VFNetConfig):
        super().__init__()
        self.strides = config.strides
        self.reg_denoms = config.reg_denoms
        feat, n = config.feat_channels, config.stacked_convs

        def tower() -> nn.ModuleList:
            return nn.ModuleList([_tower_conv(in_channels if i == 0 else feat, config, config.dcn_on_last_conv and i == n - 1) for i in range(n)])

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.vfnet_reg_conv = ConvModule(nn.Conv2d(feat, feat, 3, padding=1, bias=False), feat, config.norm_groups)
        self.vfnet_reg = nn.Conv2d(feat, 4, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

        def dconv() -> nn.Module:
            return StarDeformConv2d(feat, feat, config.gradient_mul) if config.star_dcn else GridConv2d(feat, feat)

        self.vfnet_reg_refine_dconv = self.vfnet_reg_refine = self.scales_refine = None  # box_refinement=False
        if config.box_refinement:
            self.vfnet_reg_refine_dconv = dconv()
            self.vfnet_reg_refine = nn.Conv2d(feat, 4, 3, padding=1)
            self.scales_refine = nn.ModuleList([Scale(1.0) for _ in self.strides])
        self.vfnet_cls_dconv = dconv()
        self.vfnet_cls = nn.Conv2d(feat, config.num_classes, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat, 1, 3, padding=1) if config.centerness else None
        self._init_weights()

    def _init_weights(self) -> None:
        """The official initialisation (mmdetection 2.x), used when training from scratch."""
        convs = [m.conv for m in [*self.cls_convs, *self.reg_convs, self.vfnet_reg_conv] if isinstance(m.conv, nn.Conv2d)]
        predictors = [self.vfnet_reg, self.vfnet_reg_refine, self.vfnet_cls, self.conv_centerness]
        for module in [*convs, *(m for m in predictors if m is not None)]:
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        for dconv in (self.vfnet_reg_refine_dconv, self.vfnet_cls_dconv):
            if dconv is not None:
                nn.init.normal_(dconv.weight, std=0.01)
        nn.init.constant_(self.vfnet_cls.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01

    def forward_level(self, x: torch.Tensor, level: int) -> LevelOutputs:
        cls_feat = x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        reg_feat = x
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)

        reg_init = self.vfnet_reg(self.vfnet_reg_conv(reg_feat))
        bbox_init = self.scales[level](reg_init).float().exp() * self.reg_denoms[level]  # [B, 4, h, w]

        stride = self.strides[level]
        if self.vfnet_reg_refine is not None:
            refine_feat = torch.relu(self.vfnet_reg_refine_dconv(reg_feat, bbox_init, stride))
            factor = self.scales_refine[level](self.vfnet_reg_refine(refine_feat)).float().exp()
            bbox_refine = factor * bbox_init.detach()  # [B, 4, h, w]
        else:  # ablation (e): the initial box is the final one
            bbox_refine = bbox_init

        cls_logits = self.vfnet_cls(torch.relu(self.vfnet_cls_dconv(cls_feat, bbox_init, stride)))  # [B, C, h, w]
        centerness = self.conv_centerness(reg_feat) if self.conv_centerness is not None else None  # [B, 1, h, w]
        return LevelOutputs(cls_logits, bbox_init, bbox_refine, centerness)

    def forward(self, feats: list[torch.Tensor]) -> list[LevelOutputs]:
        return [self.forward_level(x, level) for level, x in enumerate(feats)]

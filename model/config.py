"""The whole configuration of a VFNet, as one frozen dataclass.

Every preset in `presets.py` is an instance of `VFNetConfig`; `build_vfnet(preset, **overrides)`
replaces fields by name. The defaults are the official `vfnet_r50_fpn_1x_coco` values
(mmdetection 2.10, hyz-xmaster/VarifocalNet).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class VFNetConfig:
    # --- backbone: torchvision ResNet / ResNeXt, "pytorch" style (stride on the 3x3 conv) ---
    depth: int = 50  # 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck)
    groups: int = 1  # ResNeXt cardinality (32 or 64 for the X-101 presets)
    width_per_group: int = 64  # ResNeXt base width (4 for the X-101 presets)
    dcn_stages: tuple[bool, bool, bool, bool] = (False, False, False, False)  # DCNv2 conv2 in layer1..4
    frozen_stages: int = 1  # as mmdet: -1 nothing frozen, 0 the stem, n the stem and layer1..n
    norm_eval: bool = True  # keep backbone BatchNorm in eval mode (running statistics) while training

    # --- neck: FPN P3..P7, extra convs on the P5 output, ReLU before the P7 conv ---
    fpn_channels: int = 256

    # --- head: VFNetHead ---
    num_classes: int = 80
    feat_channels: int = 256
    stacked_convs: int = 3  # conv3x3 -> GN -> ReLU per tower
    norm_groups: int = 32  # GroupNorm groups in the towers and vfnet_reg_conv
    dcn_on_last_conv: bool = False  # last conv of each tower is DCNv2 (the `_mdconv` presets)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    reg_denoms: tuple[int, ...] = (64, 128, 256, 512, 1024)  # initial box = exp(scale * x) * reg_denom
    gradient_mul: float = 0.1  # share of the star-offset gradient that reaches the initial box

    # --- the ablation's variants (docs/ablation.md); the defaults are VFNet ---
    star_dcn: bool = True  # False: plain 3x3 convs (same `weight`, regular grid) replace the two star dconvs
    box_refinement: bool = True  # False: no refine branch; IACS target and boxes from the initial regression
    centerness: bool = False  # True: an FCOS/ATSS centerness branch; score = sigmoid(cls) * sigmoid(centerness)

    # --- inference (official test_cfg of mmdetection 2.10) ---
    nms_pre: int = 1000  # per level, keep this many locations by max class score before the threshold
    score_threshold: float = 0.05  # keep (box, class) pairs with IACS strictly above this
    iou_threshold: float = 0.6  # class-aware NMS suppresses IoU strictly above this
    max_detections: int = 100  # per image, after NMS; also the padded output length K

    # --- input policy (done by the runtime; the model receives resized, padded uint8 RGB) ---
    input_size: tuple[int, int] = (1333, 800)  # keep-ratio fit: long side <= [0], short side <= [1]
    size_divisor: int = 32  # pad height and width up to a multiple of this
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)  # RGB

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.reg_denoms):
            raise ValueError("strides and reg_denoms must have one entry per FPN level")
        if self.feat_channels % self.norm_groups:
            raise ValueError(f"feat_channels {self.feat_channels} is not divisible by norm_groups {self.norm_groups}")
        if self.num_classes < 1:
            raise ValueError("num_classes must be at least 1")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VFNetConfig:
        """Inverse of `to_json`; unknown keys are an error, missing keys take the defaults."""
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VFNetConfig fields: {', '.join(unknown)}")
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

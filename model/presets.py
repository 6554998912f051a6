"""Preset names -> configurations, and `build_vfnet`: the one place a name becomes a model.

Each COCO preset is key-compatible with the official checkpoint named beside it (mmdetection
v2.0 model zoo, `https://download.openmmlab.com/mmdetection/v2.0/vfnet/...`). The `_mdconv`
variants put DCNv2 in every conv2 of ResNet stages c3-c5 and in the last conv of both head towers.
"""

from __future__ import annotations

import dataclasses

from .config import VFNetConfig
from .detector import VFNet

_MDCONV = dict(dcn_stages=(False, True, True, True), dcn_on_last_conv=True)

PRESETS: dict[str, VFNetConfig] = {
    # vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth (41.6 AP val), also the mstrain_2x file
    "vfnet_r50_fpn": VFNetConfig(depth=50),
    # vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-6879c318.pth (47.8 AP val)
    "vfnet_r50_fpn_mdconv": VFNetConfig(depth=50, **_MDCONV),
    # vfnet_r101_fpn_1x_coco_20201027pth-c831ece7.pth (43.0), also the mstrain_2x file (46.2)
    "vfnet_r101_fpn": VFNetConfig(depth=101),
    # vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-7729adb5.pth (49.0)
    "vfnet_r101_fpn_mdconv": VFNetConfig(depth=101, **_MDCONV),
    # official repository only (47.4)
    "vfnet_x101_32x4d_fpn": VFNetConfig(depth=101, groups=32, width_per_group=4),
    # vfnet_x101_32x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-d300a6fc.pth (49.7)
    "vfnet_x101_32x4d_fpn_mdconv": VFNetConfig(depth=101, groups=32, width_per_group=4, **_MDCONV),
    # official repository only (48.2)
    "vfnet_x101_64x4d_fpn": VFNetConfig(depth=101, groups=64, width_per_group=4),
    # vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-b5f6da5e.pth (50.4)
    "vfnet_x101_64x4d_fpn_mdconv": VFNetConfig(depth=101, groups=64, width_per_group=4, **_MDCONV),
    # Our demo model: ResNet-18, 64-channel neck and head, trained from scratch on the synthetic
    # set (so BatchNorm trains and nothing is frozen), served at up to 512x512.
    "vfnet_r18_demo": VFNetConfig(
        depth=18,
        frozen_stages=-1,
        norm_eval=False,
        fpn_channels=64,
        feat_channels=64,
        norm_groups=16,
        num_classes=8,
        input_size=(512, 512),
    ),
}


def preset_config(preset: str, **overrides) -> VFNetConfig:
    """The configuration of `preset` with `overrides` (VFNetConfig field names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(VFNetConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown VFNet setting(s): {', '.join(unknown)}; valid ones: {', '.join(sorted(known))}")
    return dataclasses.replace(PRESETS[preset], **overrides)


def build_vfnet(preset: str, *, class_names: list[str] | None = None, **overrides) -> VFNet:
    """A randomly initialised VFNet for `preset`, in eval mode.

    `overrides` replace VFNetConfig fields, e.g. `build_vfnet("vfnet_r50_fpn", num_classes=3)`.
    When `class_names` is given and `num_classes` is not, the class count follows the names.
    """
    if class_names is not None and "num_classes" not in overrides:
        overrides["num_classes"] = len(class_names)
    config = preset_config(preset, **overrides)
    return VFNet(config, preset=preset, class_names=class_names).eval()

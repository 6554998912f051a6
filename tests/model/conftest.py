"""Fixtures for the model tests.

`official_shapes` (a fixture giving `_official_shapes`) writes down, from the spec (vfnet_spec.md section 1) and not from our model code,
the key names and shapes of an official mmdetection VFNet checkpoint, so the import tests check our
module tree against an independent description.
"""

from __future__ import annotations

import pytest
import torch


def _official_shapes(depth: int = 50, groups: int = 1, width_per_group: int = 64, dcn: bool = False, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    inplanes = 64
    for stage, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        width = planes * width_per_group // 64 * groups
        for b in range(count):
            p = f"backbone.layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, inplanes, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width // groups, 3, 3)
            if dcn and stage > 1:
                shapes[f"{p}.conv2.conv_offset.weight"] = (27, width, 3, 3)
                shapes[f"{p}.conv2.conv_offset.bias"] = (27,)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (planes * 4, width, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4

    for i, c in enumerate((512, 1024, 2048)):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (256, c, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(5):
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (256,)

    h = "bbox_head"
    for tower in ("cls_convs", "reg_convs"):
        for i in range(3):
            shapes[f"{h}.{tower}.{i}.conv.weight"] = (256, 256, 3, 3)
            if dcn and i == 2:
                shapes[f"{h}.{tower}.{i}.conv.conv_offset.weight"] = (27, 256, 3, 3)
                shapes[f"{h}.{tower}.{i}.conv.conv_offset.bias"] = (27,)
            shapes[f"{h}.{tower}.{i}.gn.weight"] = (256,)
            shapes[f"{h}.{tower}.{i}.gn.bias"] = (256,)
    shapes[f"{h}.vfnet_reg_conv.conv.weight"] = (256, 256, 3, 3)
    shapes[f"{h}.vfnet_reg_conv.gn.weight"] = (256,)
    shapes[f"{h}.vfnet_reg_conv.gn.bias"] = (256,)
    shapes[f"{h}.vfnet_reg.weight"] = (4, 256, 3, 3)
    shapes[f"{h}.vfnet_reg.bias"] = (4,)
    shapes[f"{h}.vfnet_reg_refine_dconv.weight"] = (256, 256, 3, 3)
    shapes[f"{h}.vfnet_reg_refine.weight"] = (4, 256, 3, 3)
    shapes[f"{h}.vfnet_reg_refine.bias"] = (4,)
    shapes[f"{h}.vfnet_cls_dconv.weight"] = (256, 256, 3, 3)
    shapes[f"{h}.vfnet_cls.weight"] = (num_classes, 256, 3, 3)
    shapes[f"{h}.vfnet_cls.bias"] = (num_classes,)
    for i in range(5):
        shapes[f"{h}.scales.{i}.scale"] = ()
        shapes[f"{h}.scales_refine.{i}.scale"] = ()
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes; BatchNorm counters are int64, variances positive."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.02
    return state


@pytest.fixture
def official_checkpoint(tmp_path):
    """Factory: write an mmdetection-style .pth (2.x legacy pickle by default) and return its path."""

    def make(state: dict[str, torch.Tensor], meta: dict | None = None, legacy: bool = True, name: str = "vfnet.pth"):
        path = tmp_path / name
        checkpoint = {"meta": meta if meta is not None else {"mmdet_version": "2.10.0"}, "state_dict": state}
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        return path

    return make


@pytest.fixture
def official_shapes():
    """The function `_official_shapes(depth, groups, width_per_group, dcn, num_classes)`."""
    return _official_shapes


@pytest.fixture
def random_state():
    """The function `_random_state(shapes, seed)`."""
    return _random_state

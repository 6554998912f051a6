"""Official checkpoint import: exact keys and shapes load strictly; bad files fail clearly and safely."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from vfnet.model import COCO_CLASSES, CheckpointError, convert_mmdet, load_checkpoint, read_checkpoint_metadata
from vfnet.model.mmdet import detect_preset


def test_r50_official_layout_has_373_keys(official_shapes):
    assert len(official_shapes(depth=50)) == 373  # 318 backbone + 16 neck + 39 head (spec section 1)


@pytest.mark.parametrize(
    "preset, layout",
    [
        ("vfnet_r50_fpn", dict(depth=50)),
        ("vfnet_r50_fpn_mdconv", dict(depth=50, dcn=True)),
        ("vfnet_x101_32x4d_fpn", dict(depth=101, groups=32, width_per_group=4)),
    ],
)
def test_official_checkpoint_converts_and_loads_strictly(preset, layout, official_shapes, random_state, official_checkpoint, tmp_path):
    state = random_state(official_shapes(**layout))
    src = official_checkpoint(state, meta={"mmdet_version": "2.10.0", "CLASSES": COCO_CLASSES})
    dst = tmp_path / "converted.safetensors"

    convert_mmdet(src, dst)

    meta = read_checkpoint_metadata(dst)
    assert meta["preset"] == preset
    model = load_checkpoint(dst)
    assert model.preset == preset and model.class_names == COCO_CLASSES
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in ("backbone.layer3.1.conv2.weight", "neck.fpn_convs.4.conv.bias", "bbox_head.scales_refine.3.scale"):
        assert torch.equal(loaded[key], state[key]), key
    assert loaded["bbox_head.scales.0.scale"].dim() == 0


def test_mmdet3_checkpoint_with_mmengine_objects(official_shapes, random_state, official_checkpoint, tmp_path, monkeypatch):
    """A 3.x checkpoint pickles mmengine objects and numpy arrays; they are read as inert data."""
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))

    class HistoryBuffer:
        def __init__(self):
            self.values = [1.0, 2.0]

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
    import numpy as np

    state = random_state(official_shapes(num_classes=3))
    meta = {"dataset_meta": {"classes": ("cat", "dog", "fox")}, "seed": np.int64(7)}
    checkpoint = {"meta": meta, "state_dict": state, "message_hub": {"loss": HistoryBuffer(), "arr": np.arange(4)}}
    src = tmp_path / "mmdet3.pth"
    torch.save(checkpoint, src)
    monkeypatch.delitem(sys.modules, "mmengine.logging.history_buffer")  # the reader has no mmengine

    model = convert_mmdet(src, tmp_path / "out.safetensors")

    assert model.preset == "vfnet_r50_fpn" and model.config.num_classes == 3
    assert load_checkpoint(tmp_path / "out.safetensors").class_names == ("cat", "dog", "fox")


def test_detects_custom_class_count_without_meta(official_shapes, random_state):
    preset, overrides = detect_preset(random_state(official_shapes(depth=101, groups=64, width_per_group=4, dcn=True, num_classes=5)))
    assert (preset, overrides) == ("vfnet_x101_64x4d_fpn_mdconv", {"num_classes": 5})


def test_missing_key_is_named(official_shapes, random_state, official_checkpoint, tmp_path):
    state = random_state(official_shapes())
    del state["bbox_head.vfnet_reg_refine_dconv.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): bbox_head.vfnet_reg_refine_dconv.weight"):
        convert_mmdet(official_checkpoint(state), tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_wrong_shape_is_named(official_shapes, random_state, official_checkpoint, tmp_path):
    state = random_state(official_shapes())
    state["neck.fpn_convs.2.conv.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(CheckpointError, match=r"neck.fpn_convs.2.conv.weight: file \(256, 256, 1, 1\) vs model \(256, 256, 3, 3\)"):
        convert_mmdet(official_checkpoint(state), tmp_path / "out.safetensors")


def test_non_vfnet_checkpoint_is_refused(official_checkpoint, tmp_path):
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    with pytest.raises(CheckpointError, match="not a VFNet checkpoint"):
        convert_mmdet(official_checkpoint(state), tmp_path / "out.safetensors")


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    src = tmp_path / "noise.pth"
    src.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint that can be read safely"):
        convert_mmdet(src, tmp_path / "out.safetensors")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [True, False])
def test_code_executing_pickle_is_refused_not_run(legacy, tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _RunsCode(marker)}, src, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"refused: it references posix.system"):
        convert_mmdet(src, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_cli_reports_errors_without_traceback(official_shapes, random_state, official_checkpoint, tmp_path):
    state = random_state(official_shapes())
    state.pop("backbone.layer1.0.bn1.running_mean")
    src = official_checkpoint(state)
    result = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "convert-mmdet", str(src), str(tmp_path / "o.safetensors")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "backbone.layer1.0.bn1.running_mean" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_converts(official_shapes, random_state, official_checkpoint, tmp_path):
    src = official_checkpoint(random_state(official_shapes(dcn=True)))
    dst = tmp_path / "o.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "convert-mmdet", str(src), str(dst), "--fp16"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "preset vfnet_r50_fpn_mdconv, 80 classes" in result.stdout
    assert dst.stat().st_size < 0.55 * 4 * 33.94e6  # float16 storage

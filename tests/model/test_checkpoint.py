"""Our safetensors checkpoints: round trip, metadata, float16 storage, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vfnet.model import CheckpointError, build_vfnet, load_checkpoint, read_checkpoint_metadata, save_checkpoint


def test_round_trip_keeps_weights_config_and_names(tmp_path):
    torch.manual_seed(0)
    model = build_vfnet("vfnet_r18_demo", num_classes=3, score_threshold=0.2)
    path = save_checkpoint(model, tmp_path / "m.safetensors", class_names=["a", "b", "c"], extra={"trained_by": "test"})
    meta = read_checkpoint_metadata(path)
    assert meta["preset"] == "vfnet_r18_demo" and json.loads(meta["class_names"]) == ["a", "b", "c"]
    assert meta["trained_by"] == "test" and meta["version"]
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.class_names == ("a", "b", "c")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = build_vfnet("vfnet_r18_demo")
    full = save_checkpoint(model, tmp_path / "f32.safetensors")
    half = save_checkpoint(model, tmp_path / "f16.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.51 * full.stat().st_size
    loaded = load_checkpoint(half)
    weight = loaded.bbox_head.vfnet_cls.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.bbox_head.vfnet_cls.weight, atol=1e-3, rtol=1e-3)


def test_missing_file_foreign_safetensors_and_garbage(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a vfnet-serve checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(garbage)

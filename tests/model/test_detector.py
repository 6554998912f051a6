"""The detection forward: contract shapes, batch independence, determinism, padding semantics."""

from __future__ import annotations

import pytest
import torch

from vfnet.model import build_vfnet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_vfnet("vfnet_r18_demo")
    torch.nn.init.zeros_(net.bbox_head.vfnet_cls.bias)  # scores near 0.5: plenty of detections
    return net


def images_and_sizes(sizes, canvas, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(len(sizes), 3, *canvas, dtype=torch.uint8)
    for b, (h, w) in enumerate(sizes):
        images[b, :, :h, :w] = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return images, torch.tensor(sizes)


@torch.no_grad()
def test_contract_shapes_and_types(model):
    images, sizes = images_and_sizes([(96, 128), (70, 100)], (96, 128))
    det = model(images, sizes)
    assert det.boxes.shape == (2, 100, 4) and det.boxes.dtype == torch.float32
    assert det.scores.shape == (2, 100) and det.labels.shape == (2, 100) and det.labels.dtype == torch.int64
    assert det.num_detections.shape == (2,) and det.num_detections.dtype == torch.int64
    assert 0 < det.num_detections.min() and det.num_detections.max() <= 100
    assert det.boxes[1, :, 0::2].max() <= 100 and det.boxes[1, :, 1::2].max() <= 70  # clamped to content


@torch.no_grad()
def test_raw_outputs_levels(model):
    levels = model.raw_outputs(torch.randn(2, 3, 96, 160))
    assert [tuple(t.shape) for t in levels[0][:3]] == [(2, 8, 12, 20), (2, 4, 12, 20), (2, 4, 12, 20)]
    assert all(lv.centerness is None for lv in levels)  # VFNet has no centerness branch
    assert [lv[0].shape[-2:] for lv in levels] == [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]
    assert all((lv[1] > 0).all() and (lv[2] > 0).all() for lv in levels)  # exp keeps distances positive


@torch.no_grad()
def test_batch_equals_single_runs(model):
    images, sizes = images_and_sizes([(96, 128), (64, 96), (80, 50)], (96, 128), seed=1)
    batched = model(images, sizes)
    for b in range(3):
        single = model(images[b : b + 1], sizes[b : b + 1])
        n = batched.num_detections[b]
        assert single.num_detections[0] == n
        assert torch.equal(single.labels[0], batched.labels[b])
        torch.testing.assert_close(single.scores[0], batched.scores[b], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.boxes[0], batched.boxes[b], atol=1e-3, rtol=0)


@torch.no_grad()
def test_deterministic(model):
    images, sizes = images_and_sizes([(96, 128), (64, 96)], (96, 128), seed=2)
    first, second = model(images, sizes), model(images, sizes)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@torch.no_grad()
def test_padding_is_zero_after_normalisation(model):
    """What lies in the padded area does not matter: it is zeroed after normalising, as officially."""
    images, sizes = images_and_sizes([(64, 96)], (96, 128), seed=3)
    noisy = images.clone()
    noisy[:, :, 64:, :] = 200
    noisy[:, :, :, 96:] = 17
    x = model.normalize(noisy, sizes)
    assert (x[:, :, 64:, :] == 0).all() and (x[:, :, :, 96:] == 0).all()
    expected = (images[:, :, :64, :96].float() - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(x[:, :, :64, :96], expected)
    for a, b in zip(model(images, sizes), model(noisy, sizes)):
        assert torch.equal(a, b)


@torch.no_grad()
def test_score_threshold_and_max_detections_are_settings():
    torch.manual_seed(0)
    net = build_vfnet("vfnet_r18_demo", score_threshold=0.5, max_detections=7)
    torch.nn.init.zeros_(net.bbox_head.vfnet_cls.bias)
    images, sizes = images_and_sizes([(96, 128)], (96, 128), seed=4)
    det = net(images, sizes)
    assert det.boxes.shape == (1, 7, 4)
    n = det.num_detections[0]
    assert (det.scores[0, :n] > 0.5).all()


def test_official_defaults():
    c = build_vfnet("vfnet_r50_fpn").config
    assert (c.nms_pre, c.score_threshold, c.iou_threshold, c.max_detections) == (1000, 0.05, 0.6, 100)
    assert c.reg_denoms == (64, 128, 256, 512, 1024) and c.strides == (8, 16, 32, 64, 128)
    assert c.input_size == (1333, 800) and c.stacked_convs == 3 and c.norm_groups == 32


def test_unknown_override_and_preset_are_clear_errors():
    with pytest.raises(TypeError, match="unknown VFNet setting.*num_clases"):
        build_vfnet("vfnet_r50_fpn", num_clases=3)
    with pytest.raises(ValueError, match="unknown preset 'vfnet_r51'"):
        build_vfnet("vfnet_r51")


def test_frozen_stages_and_norm_eval_in_training():
    net = build_vfnet("vfnet_r50_fpn").train()
    bb = net.backbone
    assert not any(p.requires_grad for p in bb.conv1.parameters()) and not any(p.requires_grad for p in bb.layer1.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    assert not bb.layer3[0].bn1.training and net.bbox_head.cls_convs[0].gn.training
    demo = build_vfnet("vfnet_r18_demo").train()
    assert demo.backbone.bn1.training and all(p.requires_grad for p in demo.backbone.parameters())

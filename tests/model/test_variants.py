"""The ablation's variants (issue 15) are constructor settings with the layouts their names promise.

(d) star_dcn=False: plain 3x3 convs with the same parameters in place of the star DCN;
(e) box_refinement=False: no refine branch, the final box is the initial one;
(c) centerness=True (with both of the above): an FCOS/ATSS centerness branch whose sigmoid
    multiplies the class probability, in PyTorch and in the exported graph alike.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfnet.export.plugin_graph import StarDeformConvNode, with_plugin_nodes
from vfnet.model import build_vfnet
from vfnet.model.head import GridConv2d, LevelOutputs, StarDeformConv2d

SMALL = dict(num_classes=3, fpn_channels=32, feat_channels=32, norm_groups=8, stacked_convs=1, input_size=(128, 128))
REFINE_KEYS = {
    "bbox_head.vfnet_reg_refine_dconv.weight",
    "bbox_head.vfnet_reg_refine.weight",
    "bbox_head.vfnet_reg_refine.bias",
    *(f"bbox_head.scales_refine.{i}.scale" for i in range(5)),
}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_plain_convs_keep_the_star_dcn_parameters_and_ignore_the_box():
    vfnet, plain = build_vfnet("vfnet_r18_demo", **SMALL), build_vfnet("vfnet_r18_demo", star_dcn=False, **SMALL)
    assert shapes(plain) == shapes(vfnet)  # same names and shapes: only the sampling grid differs
    head = plain.bbox_head
    assert isinstance(head.vfnet_cls_dconv, GridConv2d) and isinstance(head.vfnet_reg_refine_dconv, GridConv2d)
    assert isinstance(vfnet.bbox_head.vfnet_cls_dconv, StarDeformConv2d)

    x = torch.randn(1, 32, 6, 7)
    small, large = torch.full((1, 4, 6, 7), 8.0), torch.full((1, 4, 6, 7), 40.0)
    expected = F.conv2d(x, head.vfnet_cls_dconv.weight, padding=1)
    torch.testing.assert_close(head.vfnet_cls_dconv(x, small, 8), expected)
    torch.testing.assert_close(head.vfnet_cls_dconv(x, large, 8), expected)
    star = vfnet.bbox_head.vfnet_cls_dconv
    assert not torch.allclose(star(x, small, 8), star(x, large, 8))  # the star does follow the box

    with pytest.raises(ValueError, match="no star deformable convolution"):
        with_plugin_nodes(plain)


def test_no_refinement_drops_exactly_the_refine_branch():
    vfnet, plain = shapes(build_vfnet("vfnet_r18_demo", **SMALL)), build_vfnet("vfnet_r18_demo", box_refinement=False, **SMALL)
    assert set(vfnet) - set(shapes(plain)) == REFINE_KEYS
    assert shapes(plain) == {k: v for k, v in vfnet.items() if k not in REFINE_KEYS}
    levels = plain.raw_outputs(torch.randn(1, 3, 128, 128))
    assert all(level.bbox_refine is level.bbox_init and level.centerness is None for level in levels)
    plugin = with_plugin_nodes(plain).bbox_head  # the classification star DCN is still a plugin node
    assert isinstance(plugin.vfnet_cls_dconv, StarDeformConvNode) and plugin.vfnet_reg_refine_dconv is None


def centerness_model() -> torch.nn.Module:
    return build_vfnet("vfnet_r18_demo", centerness=True, star_dcn=False, box_refinement=False, **SMALL)


def test_centerness_variant_layout():
    vfnet = shapes(build_vfnet("vfnet_r18_demo", **SMALL))
    model = centerness_model()
    expected = {k: v for k, v in vfnet.items() if k not in REFINE_KEYS}
    expected |= {"bbox_head.conv_centerness.weight": (1, 32, 3, 3), "bbox_head.conv_centerness.bias": (1,)}
    assert shapes(model) == expected
    assert isinstance(model.bbox_head.vfnet_cls_dconv, GridConv2d)


def test_level_scores_multiply_class_and_centerness_probabilities():
    logits = torch.tensor([0.0, math.log(4.0)]).reshape(1, 2, 1, 1)  # sigmoid: 0.5, 0.8
    centerness = torch.tensor([math.log(3.0)]).reshape(1, 1, 1, 1)  # sigmoid: 0.75
    box = torch.ones(1, 4, 1, 1)
    composed = LevelOutputs(logits, box, box, centerness).scores()
    torch.testing.assert_close(composed.flatten(), torch.tensor([0.375, 0.6]))
    torch.testing.assert_close(LevelOutputs(logits, box, box).scores().flatten(), torch.tensor([0.5, 0.8]))


def constant_score_model() -> torch.nn.Module:
    """The centerness variant with constant outputs: class probability 0.5 (all classes) and
    centerness 0.75 everywhere, so every candidate's score is 0.375."""
    torch.manual_seed(0)
    model = centerness_model().eval()
    head = model.bbox_head
    for conv, bias in ((head.vfnet_cls, 0.0), (head.conv_centerness, math.log(3.0))):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.constant_(conv.bias, bias)
    return model


def test_centerness_score_ranks_the_detections():
    model = constant_score_model()
    images = torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8)
    with torch.no_grad():
        det = model(images, torch.tensor([[128, 128]]))
    n = int(det.num_detections[0])
    assert n >= 10  # 0.375 > the 0.05 floor everywhere; NMS leaves the boxes that do not overlap
    torch.testing.assert_close(det.scores[0, :n], torch.full((n,), 0.375))


def test_centerness_variant_exports_its_own_score(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from vfnet.export import export_onnx

    model = constant_score_model()
    path = export_onnx(model, tmp_path / "ctr.onnx").path
    images = np.random.default_rng(0).integers(0, 255, (1, 3, 128, 160), dtype=np.uint8)
    sizes = np.array([[128, 150]], dtype=np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["score"] == "cls_x_centerness"  # /v1/model says so
    _, scores, _, count = session.run(None, {"images": images, "image_sizes": sizes, "iou_threshold": np.array([0.6], np.float32)})
    # every score is tied, so which boxes survive NMS depends on its tie-breaking (ONNX Runtime's
    # differs from torchvision's); the scores are the composed 0.375 either way
    n = int(count[0])
    assert n >= 10
    np.testing.assert_allclose(scores[0, :n], 0.375, rtol=1e-6)
    assert (scores[0, n:] == 0).all()

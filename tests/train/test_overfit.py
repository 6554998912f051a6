"""Short overfit runs through the real training step, one per ablation variant (issue 15): the loss
falls and the one object is detected, ranked by the variant's own score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from vfnet.model import build_vfnet
from vfnet.server.coco import Sample
from vfnet.train.trainer import training_step

VARIANTS = {  # model settings, classification loss, and the loss terms the variant trains
    "a: VFNet": ({}, "varifocal", {"loss_cls", "loss_bbox", "loss_bbox_rf"}),
    "b: focal loss": ({}, "focal", {"loss_cls", "loss_bbox", "loss_bbox_rf"}),
    "c: centerness (FCOS/ATSS)": (
        dict(centerness=True, star_dcn=False, box_refinement=False),
        "focal",
        {"loss_cls", "loss_bbox", "loss_centerness"},
    ),
    "d: plain convs": (dict(star_dcn=False), "varifocal", {"loss_cls", "loss_bbox", "loss_bbox_rf"}),
    "e: no refinement": (dict(box_refinement=False), "varifocal", {"loss_cls", "loss_bbox"}),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_one_image_overfit(name):
    settings, cls_loss, terms = VARIANTS[name]
    torch.manual_seed(0)
    image = np.full((128, 128, 3), 90, np.uint8)
    image[30:90, 40:84] = (220, 40, 40)  # one red rectangle, class 2
    sample = Sample(image, np.array([[40, 30, 84, 90]], np.float32), np.array([2]), image_id=1)
    model = build_vfnet(
        "vfnet_r18_demo", num_classes=3, fpn_channels=32, feat_channels=32, norm_groups=8, stacked_convs=1, input_size=(128, 128), **settings
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        losses = training_step(model, [sample], cls_loss)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert set(losses) == terms | {"loss"}
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5])

    model.eval()
    with torch.no_grad():
        det = model(torch.from_numpy(image).permute(2, 0, 1)[None], torch.tensor([[128, 128]]))
    assert det.num_detections[0] > 0
    assert det.labels[0, 0].item() == 2
    assert box_iou(det.boxes[0, :1], torch.tensor([[40.0, 30.0, 84.0, 90.0]])).item() >= 0.5

"""VFNet: backbone -> FPN -> VFNetHead, with normalisation and post-processing inside.

`forward` is the inference contract shared by every backend (design.md):

    images        uint8 [B, 3, H, W]  RGB, resized (keep ratio) and zero-padded; H, W multiples of 32
    image_sizes   int   [B, 2]        (h, w) of each image's resized, unpadded content
    iou_threshold float [1]           class-aware NMS IoU threshold (optional; default config.iou_threshold)
    -> Detections(boxes [B, K, 4] xyxy in resized-image pixels, scores [B, K] IACS (for the
                  ablation's centerness variant sigmoid(cls) * sigmoid(centerness)),
                  labels [B, K] (-1 pads), num_detections [B]),  K = config.max_detections

`raw_outputs` gives the head's per-level tensors for parity tests; `ranked_outputs` the per-level
scores and final boxes that post-processing ranks (shared with the OpenVINO export). Training losses live in
`vfnet.train`, which calls `raw_outputs`; nothing here changes with `self.training`, except the
usual BatchNorm behaviour.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone
from .config import VFNetConfig
from .fpn import FPN
from .head import LevelOutputs, VFNetHead
from .postprocess import Detections, postprocess

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


class VFNet(nn.Module):
    """The VarifocalNet detector. Parameter names are the official checkpoints' (`backbone.*`,
    `neck.*`, `bbox_head.*`); the normalisation constants are non-persistent buffers."""

    def __init__(self, config: VFNetConfig, preset: str = "custom", class_names: list[str] | None = None):
        super().__init__()
        if class_names is None:
            class_names = COCO_CLASSES if config.num_classes == 80 else [f"class_{i}" for i in range(config.num_classes)]
        if len(class_names) != config.num_classes:
            raise ValueError(f"{len(class_names)} class names given for a model with {config.num_classes} classes")
        self.config = config
        self.preset = preset
        self.class_names = tuple(class_names)
        self.backbone = Backbone(config)
        self.neck = FPN(self.backbone.out_channels, config.fpn_channels)
        self.bbox_head = VFNetHead(config.fpn_channels, config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).reshape(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> (x - mean) / std, with the padding set to 0 afterwards.

        The official pipeline pads *after* normalising, so the padded area is 0, not -mean/std.
        Computed in float32, returned in the dtype of the backbone (float16 after `model.half()`).
        """
        x = (images.float() - self.pixel_mean.float()) / self.pixel_std.float()
        rows = torch.arange(images.shape[2], device=images.device)
        cols = torch.arange(images.shape[3], device=images.device)
        inside = (rows[None, :, None] < image_sizes[:, 0, None, None]) & (cols[None, None, :] < image_sizes[:, 1, None, None])  # [B, H, W]
        return (x * inside[:, None].to(x.dtype)).to(self.backbone.conv1.weight.dtype)

    def raw_outputs(self, x: torch.Tensor) -> list[LevelOutputs]:
        """Normalised float x [B, 3, H, W] -> per level LevelOutputs(cls_logits [B, C, h, w],
        bbox_init [B, 4, h, w], bbox_refine [B, 4, h, w], centerness); boxes as (l, t, r, b) pixel distances."""
        return self.bbox_head(self.neck(self.backbone(x)))

    def ranked_outputs(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What NMS ranks: per level (scores [B, C, h, w] float32, final boxes [B, 4, h, w] (l, t, r, b))."""
        return [(level.scores(), level.bbox_refine) for level in self.raw_outputs(self.normalize(images, image_sizes))]

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor, iou_threshold: torch.Tensor | None = None) -> Detections:
        c = self.config
        return postprocess(
            self.ranked_outputs(images, image_sizes),
            image_sizes,
            c.strides,
            c.nms_pre,
            c.score_threshold,
            c.iou_threshold if iou_threshold is None else iou_threshold,
            c.max_detections,
        )

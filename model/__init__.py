"""vfnet.model: the reference PyTorch VarifocalNet (imports torch and torchvision only).

    from vfnet.model import build_vfnet, load_checkpoint, save_checkpoint
    model = build_vfnet("vfnet_r50_fpn")                  # random init, eval mode
    model = load_checkpoint("vfnet_r50.safetensors")      # from `vfnet convert-mmdet` or training
    det = model(images_uint8, image_sizes)                # Detections(boxes, scores, labels, num_detections)

Boxes are xyxy in resized-image pixels; nothing else of vfnet-serve is imported here.
"""

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from .config import VFNetConfig
from .detector import COCO_CLASSES, VFNet
from .mmdet import convert_mmdet
from .postprocess import Detections
from .presets import PRESETS, build_vfnet, preset_config

__all__ = [
    "COCO_CLASSES",
    "PRESETS",
    "CheckpointError",
    "Detections",
    "VFNet",
    "VFNetConfig",
    "build_vfnet",
    "convert_mmdet",
    "load_checkpoint",
    "preset_config",
    "read_checkpoint_metadata",
    "save_checkpoint",
]

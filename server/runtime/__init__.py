"""vfnet.server.runtime: run an exported VFNet on images. numpy + Pillow + OpenCV; no torch needed.

    from vfnet.server.runtime import load_detector
    detector = load_detector("vfnet_r50.onnx")            # ONNX Runtime (CUDA if available, else CPU)
    [result] = detector.detect([open("street.jpg", "rb").read()], score_threshold=0.3)
    result.boxes, result.scores, result.class_names     # xyxy in original pixels, IACS, names
"""

from .detector import DetectionResult, Detector
from .images import ImageError, PreparedImage, decode_image, make_batch, prepare_image
from .load import load_detector
from .model_card import Loaded, ModelCard, ModelLoadError

__all__ = [
    "DetectionResult",
    "Detector",
    "ImageError",
    "Loaded",
    "ModelCard",
    "ModelLoadError",
    "PreparedImage",
    "decode_image",
    "load_detector",
    "make_batch",
    "prepare_image",
]

"""vfnet.server.runtime: run an exported VFNet on images. numpy + Pillow + OpenCV; no torch needed.

    from vfnet.server.runtime import load_detector
    detector = load_detector("vfnet_r50.onnx")            # ONNX Runtime (CUDA if available, else CPU)
    [result] = detector.detect([open("street.jpg", "rb").read()], score_threshold=0.3)
    result.boxes, result.scores, result.class_names     # xyxy in original pixels, IACS, names

The rooms: artifact.py (the tensors and model card every artifact carries), images.py (the one
pre-processing), detector.py (pre-processing -> one backend call -> detections), backends/ (one
module or package per backend behind one protocol), load.py (a file -> its backend).
"""

from .artifact import ModelCard, ModelLoadError
from .backends import BackendOptions
from .detector import DetectionResult, Detector, Loaded
from .images import ImageError, PreparedImage, decode_image, make_batch, prepare_image
from .load import PendingModel, load_detector, open_model

__all__ = [
    "BackendOptions",
    "DetectionResult",
    "Detector",
    "ImageError",
    "Loaded",
    "ModelCard",
    "ModelLoadError",
    "PendingModel",
    "PreparedImage",
    "decode_image",
    "load_detector",
    "make_batch",
    "open_model",
    "prepare_image",
]

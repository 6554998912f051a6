"""A static int8 (QDQ) ONNX file for ONNX Runtime on the CPU, from a float32 export.

ONNX Runtime's quantizer puts QuantizeLinear/DequantizeLinear pairs around every `Conv` (weights
int8 per output channel, activations uint8 with a range calibrated by MinMax), which ONNX Runtime
fuses into integer convolutions. Everything else stays float32: the star and DCNv2 convolutions
(`DeformConv` has no integer kernel), GroupNorm, box decoding and NMS. The graph keeps the inference
contract (same inputs and outputs), and its model card says precision "int8".

Calibration images go through the runtime's own pre-processing (decode, keep-ratio resize, pad),
so the ranges are those of what is served.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def calibration_images(folder: Path, count: int) -> list[Path]:
    """The first `count` images under `folder` (sorted); ValueError naming the folder if none."""
    if not folder.is_dir():
        raise ValueError(f"--calibration {folder}: not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not found:
        raise ValueError(f"--calibration {folder}: no {'/'.join(IMAGE_SUFFIXES)} images in it")
    return found


def quantize_int8(fp32_onnx: Path, out: Path, images: list[Path], progress: Callable[[str], None] = lambda message: None) -> None:
    """Write the int8 version of `fp32_onnx` (a detections graph from export_onnx) to `out`,
    calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vfnet.server.runtime import load_detector
    from vfnet.server.runtime.images import make_batch

    detector = load_detector(fp32_onnx, backend="onnxruntime", device="cpu")
    card = detector.card
    if card.graph != "detections" or card.precision != "fp32":
        raise ValueError(f"{fp32_onnx}: int8 starts from a float32 detections graph, not {card.precision} {card.graph}")

    class Images(CalibrationDataReader):
        """One served-size image per calibration step: the graph's three inputs."""

        def __init__(self):
            self.paths = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self.paths, None)
            if path is None:
                return None
            batch = make_batch([detector.prepare(path.read_bytes())], card.size_divisor)
            return {"images": batch.images, "image_sizes": batch.image_sizes, "iou_threshold": np.array([card.iou_threshold], np.float32)}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        progress("preparing the graph for quantization (shape inference, constant folding) ...")
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        progress(f"calibrating on {len(images)} images and quantizing the convolutions ...")
        quantize_static(
            str(prepared),
            str(out),
            Images(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: x86 without VNNI multiplies u8 x s8 pairs into int16, which 8 bits could saturate
        )
    quantized = onnx.load(str(out))
    metadata = dataclasses.replace(card, precision="int8").to_metadata()  # and nothing the quantizer added
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(onnx.StringStringEntryProto(key=key, value=value) for key, value in metadata.items())
    onnx.save(quantized, str(out))
    onnx.checker.check_model(str(out), full_check=True)

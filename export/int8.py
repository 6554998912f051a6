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

from vfnet.model import VFNet
from vfnet.server.runtime.artifact import image_inputs, read_onnx_card, write_onnx_card

from .onnx_export import export_onnx
from .prepare import ExportSummary

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

    card = read_onnx_card(fp32_onnx)
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
            return image_inputs(path.read_bytes(), card)

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
    write_onnx_card(quantized, dataclasses.replace(card, precision="int8"))  # and nothing the quantizer added
    onnx.save(quantized, str(out))
    onnx.checker.check_model(str(out), full_check=True)


def export_int8(
    model: VFNet,
    out: str | Path,
    *,
    calibration: list[Path],
    sampled_star: bool = False,
    max_detections: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """`model`'s float32 ONNX export (export_onnx), then its convolutions quantized, calibrated on
    the `calibration` images (calibration_images picks them from a folder), written to `out`.
    `sampled_star`: the star convolutions as GridSample and a 1x1 Conv, quantized too (star_sampling.py)."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        summary = export_onnx(model, fp32, sampled_star=sampled_star, max_detections=max_detections, progress=progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_int8(fp32, out, calibration, progress)
    return dataclasses.replace(summary, path=out, size_bytes=out.stat().st_size)

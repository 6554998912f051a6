"""An int8 OpenVINO IR for CPUs with VNNI or AMX, from a float32 IR of `vfnet export openvino`:
NNCF's post-training quantization (`nncf.quantize`) puts FakeQuantize operations on the inputs of
the network's convolutions (and of the elementwise operations NNCF's CPU configuration quantizes with
them), which OpenVINO's CPU plugin runs as integer kernels.

Settings, from the measurements in the issue that asked for this path (issue 31):
- preset MIXED: weights symmetric, activations asymmetric (after GroupNorm and the residual
  additions they are signed and not centred on zero);
- full bias correction (`fast_bias_correction=False`): NNCF's fast one cost the demo 0.004 to
  0.008 AP in every variant tried;
- the tail stays float: every operation with no convolution downstream of it (box decoding, the
  per-level top-k, NMS and the output plumbing) is in NNCF's ignored scope, so the boxes and scores
  are computed from the head's outputs in float, exactly as in the float32 IR;
- the star DeformableConvolutions stay float (neither NNCF nor the CPU plugin has an int8 one):
  `--sampled-star` (star_gather.py) turns each into a Gather of its corners and a quantizable matrix
  product; where the Gather reads and the weights of what it read stay float (star_geometry), so
  int8 rounds the features, never a position.
The layers NNCF leaves in float run in bfloat16 where the CPU has it, float32 elsewhere: a choice of
the runtime (backends/openvino_backend.py reads back which).

Calibration images go through the runtime's own pre-processing (decode, keep-ratio resize, pad), one
image a step, so the ranges are those of what is served. The card says precision "int8".
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from vfnet.model import VFNet
from vfnet.server.runtime.artifact import image_inputs, read_openvino_card, write_openvino_card

from .openvino_export import export_openvino
from .prepare import ExportSummary

CONVOLUTIONS = ("Convolution", "GroupConvolution", "DeformableConvolution", "MatMul")  # the network proper: the tail comes after the last of them


def float_tail(model) -> list[str]:
    """The friendly names of `model`'s operations (an openvino.Model) that have no convolution
    downstream of them: the decoding and NMS tail and the Results (Parameters and Constants left out)."""
    ops = list(model.get_ordered_ops())  # topological: every op after its inputs
    feeds_conv: set[str] = set()
    for op in reversed(ops):  # consumers before producers
        name = op.get_friendly_name()
        consumers = [target.get_node() for output in op.outputs() for target in output.get_target_inputs()]
        if op.get_type_name() in CONVOLUTIONS or any(c.get_friendly_name() in feeds_conv for c in consumers):
            feeds_conv.add(name)
    return [op.get_friendly_name() for op in ops if op.get_friendly_name() not in feeds_conv and op.get_type_name() not in ("Parameter", "Constant")]


def star_geometry(model) -> list[str]:
    """The friendly names of `model`'s operations that compute where a gathered star (star_gather.py)
    reads and the bilinear weights of what it read: for each MatMul fed by (Multiply by the corner
    weights <- Gather of the features), that Multiply and everything upstream of it and of the
    Gather's indices, back to the nearest convolution, the features excepted. Empty for a model
    without gathered stars. Left to NNCF, 150 quantizers on the demo's floors and fractions would
    move each point by up to half a quantization step, a step that grows with the largest box the
    calibration images have."""
    ops = list(model.get_ordered_ops())
    stack, features = [], set()
    for product in [op for op in ops if op.get_type_name() == "MatMul"]:
        weighting = _above_reshapes(product.input_value(0).get_node())
        gathers = [_above_reshapes(weighting.input_value(i).get_node()) for i in range(weighting.get_input_size())]
        gathers = [gather for gather in gathers if gather.get_type_name() == "Gather"]
        if weighting.get_type_name() == "Multiply" and len(gathers) == 1:
            stack += [weighting, gathers[0].input_value(1).get_node()]
            features.add(gathers[0].get_friendly_name())
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in seen or name in features or node.get_type_name() in (*CONVOLUTIONS, "Parameter", "Constant", "ShapeOf"):
            continue  # (a shape is not computed from values)
        seen.add(name)
        stack.extend(node.input_value(i).get_node() for i in range(node.get_input_size()))
    return [op.get_friendly_name() for op in ops if op.get_friendly_name() in seen]


def _above_reshapes(node):
    """The first operation at or above `node` that is not a Reshape (following first inputs)."""
    while node.get_type_name() == "Reshape":
        node = node.input_value(0).get_node()
    return node


def quantize_openvino_int8(fp32_xml: Path, out_dir: Path, images: list[Path], progress: Callable[[str], None] = lambda message: None) -> Path:
    """Write `out_dir`/model.xml and model.bin: the int8 version of `fp32_xml` (a float32 IR from
    export_openvino), calibrated on `images`. Returns the .xml's path."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its progress bars stay; its per-node INFO lines go

    model = ov.Core().read_model(str(fp32_xml))
    card = read_openvino_card(model, source=str(fp32_xml))
    if card.precision != "fp32":
        raise ValueError(f"{fp32_xml}: int8 starts from a float32 IR, not {card.precision}")
    tail = float_tail(model)
    geometry = star_geometry(model)
    progress(f"quantizing with NNCF: statistics and bias correction over {len(images)} calibration images (its progress bars follow) ...")
    dataset = nncf.Dataset(images, lambda path: image_inputs(path.read_bytes(), card))
    quantized = nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(images),
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=tail + geometry, validate=False),
    )
    write_openvino_card(quantized, dataclasses.replace(card, precision="int8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


def export_openvino_int8(
    model: VFNet,
    out_dir: str | Path,
    *,
    calibration: list[Path],
    sampled_star: bool = False,
    max_detections: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """`model`'s float32 IR (export_openvino), then quantized by NNCF on the `calibration` images
    (int8.calibration_images picks them from a folder), written to `out_dir`. `sampled_star`: the
    star convolutions as a Gather and a matrix product, quantized too (star_gather.py)."""
    with tempfile.TemporaryDirectory() as scratch:
        summary = export_openvino(model, Path(scratch), sampled_star=sampled_star, max_detections=max_detections, progress=progress)
        xml = quantize_openvino_int8(summary.path, Path(out_dir), calibration, progress)
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return dataclasses.replace(summary, path=xml, size_bytes=size)

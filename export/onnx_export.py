"""Export a VFNet to one ONNX file that carries the whole inference contract.

    images        uint8   [B, 3, H, W]  (H, W multiples of 32; B, H, W dynamic)
    image_sizes   int64   [B, 2]        content (h, w) of each image
    iou_threshold float32 [1]           class-aware NMS IoU threshold (the model card gives the default)
 -> boxes [B, K, 4] float32 xyxy, scores [B, K] float32 (IACS), labels [B, K] int64 (-1 pads),
    num_detections [B] int64

Standard operators only (opset 19): `DeformConv` for the star and DCNv2 convolutions (torchvision's
deform_conv2d, mapped by onnxscript), `NonMaxSuppression` for NMS (`onnx_nms.py`). With `raw=True`
the graph instead returns the head's 15 per-level tensors (for parity debugging); with `fp16=True`
the network computes in float16 (for TensorRT 11's strongly typed builds) while normalisation,
decoding and NMS stay float32, and so do the outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from torch import nn

from vfnet.model import VFNet, VFNetConfig
from vfnet.model.checkpoint import project_version
from vfnet.server.runtime.artifact import INPUTS, OUTPUTS, model_card, write_onnx_card

from .fp16_storage import store_weights_as_float16
from .plugin_graph import PLUGIN_OP, with_plugin_nodes
from .prepare import EXAMPLE_SIZE, OPSET, ExportSummary, dynamic_dims, example_inputs, onnx_program, prepared_copy
from .star_sampling import with_sampled_stars

LEVEL_NAMES = ("p3", "p4", "p5", "p6", "p7")


class RawHeadGraph(nn.Module):
    """(images, image_sizes) -> the head's per-level tensors, flattened: for each level
    cls_logits [B, C, h, w], bbox_init [B, 4, h, w], bbox_refine [B, 4, h, w] and, for the
    ablation's centerness variant, centerness [B, 1, h, w] (float32)."""

    def __init__(self, model: VFNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = self.model.raw_outputs(self.model.normalize(images, image_sizes))
        return tuple(t.float() for level in levels for t in level if t is not None)


def raw_output_names(config: VFNetConfig) -> list[str]:
    """RawHeadGraph's output names, in its order: `cls_logits_p3`, `bbox_init_p3`, ..."""
    kinds = ("cls_logits", "bbox_init", "bbox_refine") + ("centerness",) * config.centerness
    return [f"{kind}_{LEVEL_NAMES[i]}" for i in range(len(config.strides)) for kind in kinds]


def _describe(values: list[onnx.ValueInfoProto]) -> list[str]:
    described = []
    for v in values:
        t = v.type.tensor_type
        dims = ",".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        described.append(f"{v.name}[{dims}] {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)}")
    return described


def export_onnx(
    model: VFNet,
    out: str | Path,
    *,
    fp16: bool = False,
    fp16_storage: bool = False,
    raw: bool = False,
    plugin: bool = False,
    sampled_star: bool = False,
    max_detections: int | None = None,
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    progress: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """Export `model` (left unchanged) to `out`; returns a summary. `progress` receives step messages.
    `fp16_storage`: store the weights as float16 where they can be restored exactly (see
    fp16_storage.py): about half the file for a float16 checkpoint, the same float32 computation.
    `plugin`: write the star convolutions as TensorRT StarDeformConv nodes (plugin_graph.py).
    `sampled_star`: write them as GridSample and a 1x1 Conv, which int8 quantizes (star_sampling.py)."""
    model = prepared_copy(model, max_detections)
    if fp16:
        model = model.half()
    reference = {name: t.float().numpy() for name, t in model.state_dict().items() if t.is_floating_point()}
    if plugin:
        model = with_plugin_nodes(model)
    if sampled_star:
        model = with_sampled_stars(model)

    images, image_sizes = example_inputs(example_size)
    dims = dynamic_dims()
    if raw:
        graph, args, input_names, output_names = RawHeadGraph(model).eval(), (images, image_sizes), list(INPUTS[:2]), raw_output_names(model.config)
    else:
        graph, args = model, (images, image_sizes, torch.tensor([model.config.iou_threshold]))
        dims, input_names, output_names = {**dims, INPUTS[2]: None}, list(INPUTS), list(OUTPUTS)

    progress(f"tracing {model.preset} with torch.export and translating to ONNX opset {OPSET} (the slow step) ...")
    start = time.perf_counter()
    program = onnx_program(graph, args, dims, input_names, output_names)
    progress(f"  done in {time.perf_counter() - start:.1f} s; writing and checking the file ...")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    proto = onnx.load(str(out))
    card = model_card(model, "fp16" if fp16 else "fp32", project_version(), graph="raw" if raw else "detections", plugins=(PLUGIN_OP,) * plugin)
    write_onnx_card(proto, card)
    if fp16_storage:
        counts = store_weights_as_float16(proto, reference)
        progress(f"  weights stored as float16: {counts['exact']} exactly, {counts['rebuilt']} rebuilt from the checkpoint, {counts['kept']} kept float32")
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportSummary(out, out.stat().st_size, opset, _describe(proto.graph.input), _describe(proto.graph.output))

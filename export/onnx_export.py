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

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn
from torch.export import Dim

from vfnet.model import VFNet, VFNetConfig
from vfnet.model.checkpoint import project_version
from vfnet.server.runtime.model_card import ModelCard

from .fp16_storage import store_weights_as_float16
from .onnx_nms import multiclass_nms_onnx
from .plugin_graph import PLUGIN_OP, with_plugin_nodes

OPSET = 19
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


def model_card(model: VFNet, graph: str, precision: str, plugins: tuple[str, ...] = ()) -> ModelCard:
    """What the runtime needs to serve the file without our checkpoint (written as metadata_props)."""
    return ModelCard.from_config(model.config, model.preset, model.class_names, precision, project_version(), graph=graph, plugins=plugins)


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    size_bytes: int
    opset: int | None  # the ONNX opset; None for an OpenVINO IR
    inputs: list[str]
    outputs: list[str]

    def __str__(self) -> str:
        opset = f", opset {self.opset}" if self.opset is not None else ""
        return f"{self.path}: {self.size_bytes / 1e6:.1f} MB{opset}; inputs {', '.join(self.inputs)}; outputs {', '.join(self.outputs)}"


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
    max_detections: int | None = None,
    example_size: tuple[int, int] = (320, 416),
    progress: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """Export `model` (left unchanged) to `out`; returns a summary. `progress` receives step messages.
    `fp16_storage`: store the weights as float16 where they can be restored exactly (see
    fp16_storage.py): about half the file for a float16 checkpoint, the same float32 computation.
    `plugin`: write the star convolutions as TensorRT StarDeformConv nodes (plugin_graph.py)."""
    model = copy.deepcopy(model).eval()
    if max_detections is not None:
        if max_detections < 1:
            raise ValueError("max_detections must be at least 1")
        model.config = dataclasses.replace(model.config, max_detections=max_detections)
    if fp16:
        model = model.half()
    reference = {name: t.float().numpy() for name, t in model.state_dict().items() if t.is_floating_point()}
    if plugin:
        model = with_plugin_nodes(model)

    height, width = example_size
    images = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    image_sizes = torch.tensor([[height, width], [height - 32, width - 64]], dtype=torch.int64)
    batch, h32, w32 = Dim("batch", min=1, max=256), Dim("h32", min=1, max=1024), Dim("w32", min=1, max=1024)
    image_dims = {0: batch, 2: 32 * h32, 3: 32 * w32}
    if raw:
        graph, args = RawHeadGraph(model).eval(), (images, image_sizes)
        dynamic_shapes = {"images": image_dims, "image_sizes": {0: batch}}
        input_names, output_names = ["images", "image_sizes"], raw_output_names(model.config)
    else:
        graph, args = model, (images, image_sizes, torch.tensor([model.config.iou_threshold]))
        dynamic_shapes = {"images": image_dims, "image_sizes": {0: batch}, "iou_threshold": None}
        input_names, output_names = ["images", "image_sizes", "iou_threshold"], ["boxes", "scores", "labels", "num_detections"]

    progress(f"tracing {model.preset} with torch.export and translating to ONNX opset {OPSET} (the slow step) ...")
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="# The axis name")  # torch notes that batch dims are shared
        program = torch.onnx.export(
            graph,
            args,
            dynamo=True,
            opset_version=OPSET,
            dynamic_shapes=dynamic_shapes,
            input_names=input_names,
            output_names=output_names,
            custom_translation_table={torch.ops.vfnet.multiclass_nms.default: multiclass_nms_onnx},
            verbose=False,
        )
    progress(f"  done in {time.perf_counter() - start:.1f} s; writing and checking the file ...")
    card = model_card(model, graph="raw" if raw else "detections", precision="fp16" if fp16 else "fp32", plugins=(PLUGIN_OP,) * plugin)
    program.model.metadata_props.update(card.to_metadata())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    if fp16_storage:
        proto = onnx.load(str(out))
        counts = store_weights_as_float16(proto, reference)
        onnx.save(proto, str(out))
        progress(f"  weights stored as float16: {counts['exact']} exactly, {counts['rebuilt']} rebuilt from the checkpoint, {counts['kept']} kept float32")
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportSummary(out, out.stat().st_size, opset, _describe(proto.graph.input), _describe(proto.graph.output))

"""What every export target shares, in one place: the prepared copy of the model, the example inputs
and dynamic dimensions it is traced with, the ONNX translation (opset and our NMS op), and the
summary each target prints. A target file (onnx_export.py, openvino_export.py, int8.py) holds one
public `export_<target>(model, out, *, ...)` built from these; the tensor names and the model card
come from the runtime's artifact contract (vfnet.server.runtime.artifact).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from vfnet.model import VFNet
from vfnet.model.head import StarDeformConv2d
from vfnet.server.runtime.artifact import INPUTS

from .onnx_nms import multiclass_nms_onnx

OPSET = 19
EXAMPLE_SIZE = (320, 416)  # (h, w) of the example canvas: multiples of 32, any size traces the same graph


def prepared_copy(model: VFNet, max_detections: int | None = None) -> VFNet:
    """A copy of `model` in eval mode (the caller's model is left unchanged), with its detections
    per image set to `max_detections` when given (ValueError below 1)."""
    model = copy.deepcopy(model).eval()
    if max_detections is not None:
        if max_detections < 1:
            raise ValueError("max_detections must be at least 1")
        model.config = dataclasses.replace(model.config, max_detections=max_detections)
    return model


def with_star_convs_replaced(model: VFNet, replacement: Callable[[StarDeformConv2d], nn.Module], flag: str) -> VFNet:
    """A copy of `model` whose star convolutions (two, or one without box refinement) are each
    `replacement(conv)`. ValueError naming `flag` for a model without any (the ablation's `star_dcn=False`)."""
    model = copy.deepcopy(model)
    head = model.bbox_head
    names = [name for name in ("vfnet_reg_refine_dconv", "vfnet_cls_dconv") if isinstance(getattr(head, name), StarDeformConv2d)]
    if not names:
        raise ValueError(f"this model has no star deformable convolution (star_dcn=False): export it without {flag}")
    for name in names:
        setattr(head, name, replacement(getattr(head, name)))
    return model


def example_inputs(size: tuple[int, int] = EXAMPLE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images of one canvas, the second with less content: images uint8 [2, 3, h, w] (zeros),
    image_sizes int64 [2, 2] content (h, w)."""
    height, width = size
    images = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    image_sizes = torch.tensor([[height, width], [height - 32, width - 64]], dtype=torch.int64)
    return images, image_sizes


def dynamic_dims() -> dict[str, dict[int, Dim]]:
    """torch.export's dynamic dimensions of the contract's inputs: batch, and height and width in
    steps of 32 (images [batch, 3, 32 * h32, 32 * w32], image_sizes [batch, 2])."""
    batch, h32, w32 = Dim("batch", min=1, max=256), Dim("h32", min=1, max=1024), Dim("w32", min=1, max=1024)
    images, image_sizes, _ = INPUTS
    return {images: {0: batch, 2: 32 * h32, 3: 32 * w32}, image_sizes: {0: batch}}


def onnx_program(graph: nn.Module, args: tuple, dynamic_shapes: dict, input_names: list[str], output_names: list[str]):
    """`graph` traced with torch.export and translated to ONNX at OPSET, our `vfnet::multiclass_nms`
    op through its translation (onnx_nms.py); an onnx ONNXProgram (`.model`, `.save`)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="# The axis name")  # torch notes that batch dims are shared
        return torch.onnx.export(
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


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, as every target prints it."""

    path: Path
    size_bytes: int
    opset: int | None  # the ONNX opset; None for an OpenVINO IR
    inputs: list[str]  # e.g. "images[batch,3,32*h32,32*w32] uint8"
    outputs: list[str]

    def __str__(self) -> str:
        opset = f", opset {self.opset}" if self.opset is not None else ""
        return f"{self.path}: {self.size_bytes / 1e6:.1f} MB{opset}; inputs {', '.join(self.inputs)}; outputs {', '.join(self.outputs)}"

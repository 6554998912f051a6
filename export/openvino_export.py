"""Export a VFNet to an OpenVINO IR (`model.xml` + `model.bin`) that carries the whole inference
contract, for OpenVINO's CPU plugin (float32, or bfloat16 where the CPU has AVX512_BF16 or AMX).

    images        uint8   [B, 3, H, W]  (H, W multiples of 32; B, H, W dynamic)
    image_sizes   int64   [B, 2]        content (h, w) of each image
    iou_threshold float32 [1]           class-aware NMS IoU threshold (the model card gives the default)
 -> boxes [B, K, 4] float32 xyxy, scores [B, K] float32 (IACS), labels [B, K] int64 (-1 pads),
    num_detections [B] int64

The same contract as the ONNX export, built from two conversions joined into one model:

1. the network up to the NMS candidates (`CandidatesGraph`: normalisation, backbone, FPN, head,
   per-level top-k, decoding, clamping), through torch.export and OpenVINO's PyTorch frontend, which
   converts torchvision's deform_conv2d (its ONNX reader has no `DeformConv`);
2. NMS: the frontend cannot convert our `vfnet::multiclass_nms` op, so the op goes through the ONNX
   exporter with the translation every ONNX file uses (onnx_nms.py) and OpenVINO's ONNX reader
   turns that into OpenVINO operators (NonMaxSuppression, TopK, Gather...);
3. the NMS model's candidate inputs are replaced by the candidates' outputs.

The model card is kept in the IR's rt_info (artifact.write_openvino_card).
Weights stay float32 in the .bin; bfloat16 is a choice of the runtime (backends/openvino_backend.py).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from vfnet.model import VFNet
from vfnet.model.checkpoint import project_version
from vfnet.model.postprocess import candidates, multiclass_nms
from vfnet.server.runtime.artifact import INPUTS, OUTPUTS, model_card, write_openvino_card

from .prepare import EXAMPLE_SIZE, ExportSummary, dynamic_dims, example_inputs, onnx_program, prepared_copy
from .star_gather import with_gathered_stars

NMS_CANDIDATES = ("candidate_boxes", "candidate_scores")  # the NMS model's inputs, joined to CandidatesGraph's outputs


class CandidatesGraph(nn.Module):
    """(images uint8 [B, 3, H, W], image_sizes [B, 2]) -> NMS candidates: boxes [B, N, 4] xyxy in
    resized pixels, clamped, and scores [B, N, C] (the IACS, or the model's own score), as
    `VFNet.forward` hands them to NMS."""

    def __init__(self, model: VFNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.model.config
        return candidates(self.model.ranked_outputs(images, image_sizes), image_sizes, c.strides, c.nms_pre)


class NmsGraph(nn.Module):
    """(candidate_boxes [B, N, 4], candidate_scores [B, N, C], iou_threshold [1]) -> the contract's
    four outputs (its argument names are the NMS model's input names, NMS_CANDIDATES)."""

    def __init__(self, score_threshold: float, max_detections: int):
        super().__init__()
        self.score_threshold, self.max_detections = score_threshold, max_detections

    def forward(self, candidate_boxes: torch.Tensor, candidate_scores: torch.Tensor, iou_threshold: torch.Tensor):
        return multiclass_nms(candidate_boxes, candidate_scores, self.score_threshold, iou_threshold, self.max_detections)


def min_by_arithmetic(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Rewrite each `torch.sym_min(a, b)` on sizes (top_candidates' k = min(nms_pre, h * w)) with
    + - * //, the only size arithmetic OpenVINO's frontend converts. For sizes a >= 0, b >= 1:

        min(a, b) = a - (a - b) * at_least,   at_least = 1 - 1 // (a // b + 1)   (1 if a >= b, else 0)

    Every quotient stays small: OpenVINO's CPU plugin divides integers through float32, so a
    formula dividing by a large constant (2**30, say) rounds to the wrong side."""
    graph = program.graph_module.graph
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target is torch.sym_min]:
        a, b = node.args
        with graph.inserting_before(node):
            steps = [graph.call_function(operator.floordiv, (a, b))]  # a // b
            steps.append(graph.call_function(operator.add, (steps[-1], 1)))
            steps.append(graph.call_function(operator.floordiv, (1, steps[-1])))  # 1 if a < b, else 0
            steps.append(graph.call_function(operator.sub, (1, steps[-1])))  # at_least
            steps.append(graph.call_function(operator.sub, (a, b)))
            steps.append(graph.call_function(operator.mul, (steps[-1], steps[-2])))  # max(a - b, 0)
            steps.append(graph.call_function(operator.sub, (a, steps[-1])))  # min(a, b)
        for step in steps:
            step.meta = dict(node.meta)
        node.replace_all_uses_with(steps[-1])
        graph.erase_node(node)
    program.graph_module.recompile()
    return program


def export_openvino(
    model: VFNet,
    out_dir: str | Path,
    *,
    sampled_star: bool = False,
    max_detections: int | None = None,
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    progress: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """Write `out_dir`/model.xml and model.bin for `model` (left unchanged); returns a summary.
    `sampled_star`: the star convolutions as a Gather of their corners and a matrix product, which
    NNCF quantizes (star_gather.py; the ONNX export's GridSample form is slower in OpenVINO's int8)."""
    import openvino as ov

    model = prepared_copy(model, max_detections).float()
    if sampled_star:
        model = with_gathered_stars(model)
    c = model.config
    images, image_sizes = example_inputs(example_size)

    progress(f"tracing {model.preset} up to NMS with torch.export and converting it with OpenVINO's PyTorch frontend (the slow step) ...")
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(CandidatesGraph(model), (images, image_sizes), dynamic_shapes=dynamic_dims())
        network = ov.convert_model(min_by_arithmetic(program))
        boxes, scores = CandidatesGraph(model)(images, image_sizes)  # example inputs of the NMS export
    progress(f"  done in {time.perf_counter() - start:.1f} s; converting NMS through ONNX ...")
    nms = _nms_model(ov, boxes, scores, c.score_threshold, c.max_detections)

    # Join: the NMS model's candidate inputs now read the network's two outputs.
    joined = {p.get_friendly_name(): p for p in nms.get_parameters()}
    for name, result in zip(NMS_CANDIDATES, network.get_results()):
        joined[name].output(0).replace(result.input_value(0))
    full = ov.Model(nms.get_results(), [*network.get_parameters(), joined[INPUTS[2]]], model.preset)
    for port, name in zip(full.inputs, INPUTS):
        port.get_tensor().set_names({name})
    for port, name in zip(full.outputs, OUTPUTS):
        port.get_tensor().set_names({name})
    write_openvino_card(full, model_card(model, "fp32", project_version()))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(full, str(xml), compress_to_fp16=False)  # float32 weights; the runtime picks the precision
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    described = lambda ports: [f"{p.get_any_name()}{p.get_partial_shape()} {p.get_element_type().get_type_name()}" for p in ports]  # noqa: E731
    return ExportSummary(xml, size, None, described(full.inputs), described(full.outputs))


def _nms_model(ov, boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, max_detections: int):
    """`vfnet::multiclass_nms` as an OpenVINO model, through our ONNX translation (onnx_nms.py):
    inputs NMS_CANDIDATES and the IoU threshold, outputs the contract's."""
    batch, count = Dim("batch", min=1, max=256), Dim("candidates", min=1, max=1_000_000)
    candidate_boxes, candidate_scores = NMS_CANDIDATES
    iou_threshold = INPUTS[2]
    program = onnx_program(
        NmsGraph(score_threshold, max_detections).eval(),
        (boxes, scores, torch.tensor([0.5])),
        {candidate_boxes: {0: batch, 1: count}, candidate_scores: {0: batch, 1: count}, iou_threshold: None},
        [candidate_boxes, candidate_scores, iou_threshold],
        list(OUTPUTS),
    )
    return ov.Core().read_model(program.model_proto.SerializeToString(), b"")

"""ONNX export: standard operators, metadata, and parity with PyTorch through ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import box_iou

from vfnet.export.onnx_export import raw_output_names
from vfnet.server.runtime import load_detector, make_batch, prepare_image


def run_onnx(path, **feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_standard_operators_only(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    ops = Counter(node.op_type for node in model.graph.node)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 19)]
    assert ops["DeformConv"] == 10  # two star convs per level
    assert ops["NonMaxSuppression"] == 1
    onnx.checker.check_model(model, full_check=True)


def test_inputs_outputs_and_dynamic_axes(tiny_onnx):
    model = onnx.load(str(tiny_onnx))

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inputs = {v.name: dims(v) for v in model.graph.input}
    outputs = {v.name: dims(v) for v in model.graph.output}
    assert inputs == {"images": ["batch", 3, "32*h32", "32*w32"], "image_sizes": ["batch", 2], "iou_threshold": [1]}
    assert outputs == {"boxes": ["batch", 100, 4], "scores": ["batch", 100], "labels": ["batch", 100], "num_detections": ["batch"]}


def test_metadata_round_trip(tiny_onnx, tiny_model):
    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    assert meta["format"] == "vfnet-serve" and meta["graph"] == "detections" and meta["precision"] == "fp32"
    detector = load_detector(tiny_onnx)
    card, c = detector.card, tiny_model.config
    assert card.class_names == tiny_model.class_names and card.preset == "vfnet_r18_demo"
    assert (card.max_detections, card.score_threshold, card.iou_threshold) == (c.max_detections, c.score_threshold, c.iou_threshold)
    assert card.input_size == c.input_size and card.size_divisor == 32 and detector.loaded.backend == "onnxruntime"
    assert meta["pixel_mean"] == "[123.675, 116.28, 103.53]" and meta["pixel_std"] == "[58.395, 57.12, 57.375]"


@pytest.mark.parametrize("canvas", [(256, 320), (160, 480)])  # two sizes through one file
def test_raw_head_outputs_match_pytorch(tiny_onnx_raw, tiny_model, photo_like_images, canvas):
    """Logits agree to 1e-4 absolute. Box distances are pixels (up to ~1000 here), so float32 rounding
    alone is ~1e-4 px: they are compared in units of their level's reg_denom d_l (64..1024), the scale
    the head regresses in (box = exp(scale * x) * d_l), and must also agree to 1e-3 px."""
    batch = make_batch([prepare_image(image, canvas, 32) for image in photo_like_images[:2]], 32)
    outputs = run_onnx(tiny_onnx_raw, images=batch.images, image_sizes=batch.image_sizes)
    with torch.no_grad():
        x = tiny_model.normalize(torch.from_numpy(batch.images), torch.from_numpy(batch.image_sizes))
        expected = [t.numpy() for level in tiny_model.raw_outputs(x) for t in level if t is not None]
    worst = {"cls_logits": 0.0, "box_px": 0.0, "box_in_d": 0.0}
    for index, (name, got, want) in enumerate(zip(raw_output_names(tiny_model.config), outputs, expected)):
        assert got.shape == want.shape, name
        diff = float(np.abs(got - want).max())
        if name.startswith("cls_logits"):
            worst["cls_logits"] = max(worst["cls_logits"], diff)
        else:
            worst["box_px"] = max(worst["box_px"], diff)
            worst["box_in_d"] = max(worst["box_in_d"], diff / tiny_model.config.reg_denoms[index // 3])
    print(f"raw outputs, canvas {canvas}: max |ONNX Runtime - PyTorch| = {worst}")
    assert worst["cls_logits"] <= 1e-4 and worst["box_in_d"] <= 1e-4 and worst["box_px"] <= 1e-3


def assert_same_detections(a, b):
    """Same detections: one-to-one, same label, |score difference| <= 1e-4, IoU >= 0.999 (or, for a
    box clamped to a line, corners within 1e-3 px). The order may differ only between detections
    whose scores tie within float rounding (the random test model gives many scores near 0.5)."""
    assert len(a) == len(b) > 0
    ious = box_iou(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes)).nan_to_num(0).numpy()  # [N, N]
    corners = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(axis=2)
    same = (a.labels[:, None] == b.labels[None, :]) & (np.abs(a.scores[:, None] - b.scores[None, :]) <= 1e-4)
    same &= (ious >= 0.999) | (corners <= 1e-3)
    unmatched = set(range(len(b)))
    for i in range(len(a)):
        j = next((j for j in sorted(unmatched, key=lambda j: abs(i - j)) if same[i, j]), None)
        assert j is not None, f"detection {i} ({a.labels[i]}, {a.scores[i]:.6f}, {a.boxes[i]}) has no counterpart"
        assert i == j or abs(a.scores[i] - a.scores[j]) <= 1e-4, f"detection {i} is the other's {j}: not a tie"
        unmatched.remove(j)


@pytest.mark.parametrize("count", [1, 3])  # batch 1, and a batch of differently sized images
def test_detections_match_pytorch(tiny_onnx, tiny_checkpoint, photo_like_images, count):
    onnx_detector = load_detector(tiny_onnx)
    torch_detector = load_detector(tiny_checkpoint)
    assert torch_detector.loaded.backend == "torch"
    images = photo_like_images[:count]
    for got, want in zip(onnx_detector.detect(images), torch_detector.detect(images)):
        assert_same_detections(got, want)


def max_same_class_iou(boxes, labels, count):
    boxes, labels = torch.from_numpy(boxes[:count]), torch.from_numpy(labels[:count])
    iou = box_iou(boxes, boxes).nan_to_num(0).fill_diagonal_(0)  # empty boxes: 0/0
    return float((iou * (labels[:, None] == labels[None, :])).max())


def test_iou_threshold_is_a_graph_input(tiny_onnx, tiny_model, photo_like_images):
    batch = make_batch([prepare_image(image, tiny_model.config.input_size, 32) for image in photo_like_images[:2]], 32)
    overlaps = []
    for iou in (0.3, 0.6, 0.9):
        got = run_onnx(tiny_onnx, images=batch.images, image_sizes=batch.image_sizes, iou_threshold=np.array([iou], np.float32))
        with torch.no_grad():
            want = tiny_model(torch.from_numpy(batch.images), torch.from_numpy(batch.image_sizes), torch.tensor([iou]))
        assert got[3].tolist() == want.num_detections.tolist()
        assert got[2].tolist() == want.labels.tolist()
        overlaps.append(max(max_same_class_iou(got[0][b], got[2][b], got[3][b]) for b in range(2)))
    assert overlaps[0] <= 0.3 < overlaps[1] <= 0.6 < overlaps[2] <= 0.9  # each threshold really applied


def test_fp16_graph(tiny_model, tmp_path, photo_like_images):
    from vfnet.export import export_onnx

    path = export_onnx(tiny_model, tmp_path / "fp16.onnx", fp16=True).path
    model = onnx.load(str(path))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "DeformConv")}
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert conv_weights and all(types[w] == onnx.TensorProto.FLOAT16 for w in conv_weights if w in types)
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
        onnx.TensorProto.INT64,
    ]
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    half, full = load_detector(path).detect(photo_like_images[:1])[0], load_detector_cached(tiny_model, tmp_path).detect(photo_like_images[:1])[0]
    assert half.labels[:5].tolist() == full.labels[:5].tolist()
    assert np.abs(half.scores[:20] - full.scores[:20]).max() < 5e-3


def load_detector_cached(model, tmp_path):
    from vfnet.model import save_checkpoint

    return load_detector(save_checkpoint(model, tmp_path / "full.safetensors"))


def test_cli_export_with_max_detections(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "export", "onnx", "--weights", str(tiny_checkpoint), "--out", str(out), "--max-detections", "20"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "tracing vfnet_r18_demo" in result.stderr  # progress for the slow step
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and "opset 19" in summary[0] and "boxes[batch,20,4] float32" in summary[0]
    assert load_detector(out).card.max_detections == 20


def test_cli_export_bad_weights_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_text("not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "export", "onnx", "--weights", str(bogus), "--out", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "error:" in result.stderr and "Traceback" not in result.stderr

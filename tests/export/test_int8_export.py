"""`vfnet export onnx --int8`: the demo's convolutions quantized (static QDQ, calibrated through the
runtime's pre-processing), served by the same onnxruntime backend, and its detections against the
float32 graph's; the command's clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from torchvision.ops import box_iou

from vfnet.export.int8 import calibration_images, quantize_int8
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_ONNX
from vfnet.train.synth import render_image


def scene(seed: int, index: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(render_image(np.random.default_rng([seed, index]), 384, 512, min_side=48, max_objects=5)[0]).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory):
    """The committed demo ONNX quantized, calibrated on 16 synthetic scenes (seed 31)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(16):
        (folder / f"{i:02d}.jpg").write_bytes(scene(31, i))
    out = tmp_path_factory.mktemp("int8") / "demo_int8.onnx"
    quantize_int8(DEMO_ONNX, out, calibration_images(folder, 16))
    return out


def test_the_int8_graph_keeps_the_contract_quantizes_every_conv_and_says_int8(demo_int8):
    fp32, int8 = onnx.load(str(DEMO_ONNX)), onnx.load(str(demo_int8))
    assert [i.name for i in int8.graph.input] == [i.name for i in fp32.graph.input]
    assert [o.name for o in int8.graph.output] == [o.name for o in fp32.graph.output]
    ops_fp32, ops_int8 = Counter(n.op_type for n in fp32.graph.node), Counter(n.op_type for n in int8.graph.node)
    assert ops_int8["DeformConv"] == ops_fp32["DeformConv"] == 10  # no integer kernel: stays float32
    produced_by = {output: node for node in int8.graph.node for output in node.output}
    int8_weights = {t.name for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    for conv in (n for n in int8.graph.node if n.op_type == "Conv"):
        data, weight = (produced_by.get(name) for name in conv.input[:2])
        assert data is not None and data.op_type == "DequantizeLinear", conv.name
        assert weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in int8_weights, conv.name
    detector = load_detector(demo_int8, device="cpu")
    assert detector.card.precision == "int8" and detector.loaded.backend == "onnxruntime"
    assert detector.card.class_names == load_detector(DEMO_ONNX, device="cpu").card.class_names


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of `boxes` [N, 4] (torchvision's box_iou)."""
    return box_iou(torch.from_numpy(box[None]).double(), torch.from_numpy(boxes).double())[0].numpy()


def test_int8_finds_what_fp32_finds_on_held_out_scenes(demo_int8):
    """Each float32 detection above the served threshold (0.3) against the best int8 detection of
    its class (any score above the model's floor, since a score near 0.3 may cross it). Measured on
    100 held-out synth_val images (952 detections): every one matched at IoU >= 0.5; IoU 1st/5th
    percentile 0.92/0.95, minimum 0.65; |score difference| median 0.008, 99th percentile 0.067,
    maximum 0.14. The bounds below hold that distribution with margin on 12 other scenes."""
    fp32, int8 = load_detector(DEMO_ONNX, device="cpu"), load_detector(demo_int8, device="cpu")
    overlaps, differences, unmatched = [], [], []
    for index in range(12):
        data = scene(77, index)  # a seed neither the demo's training nor the calibration used
        a, b = fp32.detect([data], score_threshold=0.3)[0], int8.detect([data])[0]
        for box, score, label in zip(a.boxes, a.scores, a.labels):
            same = b.labels == label
            ious = iou(box, b.boxes[same]) if same.any() else np.zeros(1)
            best = int(ious.argmax())
            if ious[best] < 0.5:
                unmatched.append(f"scene {index}: class {label} {box.round(1)} {score:.3f} (best int8 IoU {ious[best]:.2f})")
                continue
            overlaps.append(ious[best])
            differences.append(abs(float(b.scores[same][best]) - float(score)))
    assert len(overlaps) + len(unmatched) >= 20 and unmatched == [], "\n".join(unmatched)
    overlaps, differences = np.array(overlaps), np.array(differences)
    assert (overlaps >= 0.9).mean() >= 0.9 and overlaps.min() >= 0.6
    assert np.median(differences) <= 0.02 and differences.max() <= 0.2


def export(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfnet.server.cli", "export", "onnx", *flags], capture_output=True, text=True, timeout=300)


def test_int8_without_calibration_or_with_other_graph_flags_is_a_clear_error(tiny_checkpoint, tmp_path):
    out = str(tmp_path / "m.onnx")
    done = export("--weights", str(tiny_checkpoint), "--out", out, "--int8")
    assert done.returncode == 2 and "--int8 needs --calibration DIR" in done.stderr
    done = export("--weights", str(tiny_checkpoint), "--out", out, "--int8", "--fp16", "--calibration", str(tmp_path))
    assert done.returncode == 2 and "cannot go with --fp16, --raw or --plugin" in done.stderr
    (tmp_path / "empty").mkdir()
    done = export("--weights", str(tiny_checkpoint), "--out", out, "--int8", "--calibration", str(tmp_path / "empty"))
    assert done.returncode == 1 and "no .jpg/.jpeg/.png/.webp/.bmp images in it" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()

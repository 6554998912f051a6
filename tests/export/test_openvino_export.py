"""`vfnet export openvino`: the demo as one OpenVINO IR holding the whole contract (NMS included),
served by the openvino backend with the detections of the float32 ONNX file through the same
runtime; the size arithmetic rewritten for OpenVINO's frontend; the command's clear errors."""

from __future__ import annotations

import operator
import subprocess
import sys

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from vfnet.export.openvino_export import min_by_arithmetic  # noqa: E402
from vfnet.model.postprocess import top_candidates  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.images import make_batch  # noqa: E402
from vfnet.server.runtime.load import DEMO_ONNX  # noqa: E402
from vfnet.train.synth import render_image  # noqa: E402


def test_the_ir_has_the_contract_the_card_and_one_nms(demo_ir):
    model = ov.Core().read_model(str(demo_ir))
    assert [(p.get_any_name(), p.get_element_type().get_type_name(), str(p.get_partial_shape())) for p in model.inputs] == [
        ("images", "u8", "[?,?,?,?]"),
        ("image_sizes", "i64", "[?,?]"),
        ("iou_threshold", "f32", "[1]"),
    ]
    assert [(p.get_any_name(), p.get_element_type().get_type_name(), str(p.get_partial_shape())) for p in model.outputs] == [
        ("boxes", "f32", "[?,100,4]"),
        ("scores", "f32", "[?,100]"),
        ("labels", "i64", "[?,100]"),
        ("num_detections", "i64", "[?]"),
    ]
    kinds = [op.get_type_name() for op in model.get_ops()]
    assert kinds.count("NonMaxSuppression") == 1 and kinds.count("DeformableConvolution") == 10  # as in the ONNX file
    assert demo_ir.with_suffix(".bin").stat().st_size > 40e6  # float32 weights
    ir, onnx = load_detector(demo_ir, precision="fp32"), load_detector(DEMO_ONNX, device="cpu")
    assert ir.loaded.backend == "openvino" and ir.loaded.precision == "fp32" and ir.card == onnx.card


def scene(seed: int, index: int, height: int, width: int) -> np.ndarray:
    return render_image(np.random.default_rng([seed, index]), height, width, min_side=24, max_objects=5)[0]


def test_ir_detections_equal_the_onnx_files_through_the_runtime(demo_ir):
    """Float32 against float32: the same network and the same NMS, so the same detections up to
    float rounding. Measured on 12 scenes: boxes within 1e-4 px, scores within 1e-6. The runtime
    fits every image to the demo's 512 input; on a 384×512 canvas P3 has more than nms_pre (1000)
    locations and P4 to P7 fewer, so both sides of min(nms_pre, h*w), which the IR computes by
    arithmetic, are in play; the test of min_by_arithmetic below checks each side directly."""
    ir, onnx = load_detector(demo_ir, precision="fp32"), load_detector(DEMO_ONNX, device="cpu")
    images = [scene(7, i, *size) for i, size in enumerate([(96, 128), (384, 512), (720, 1000), (500, 300)])]
    found = 0
    for a, b in zip(ir.detect(images, score_threshold=0.05), onnx.detect(images, score_threshold=0.05)):
        assert len(a) == len(b)
        found += len(a)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=2e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert found >= 4


def test_a_batch_of_differently_sized_images_matches_one_at_a_time(demo_ir):
    """Dynamic batch and canvas: padding one image to another's canvas changes nothing it detects."""
    ir = load_detector(demo_ir, precision="fp32")
    images = [scene(9, 0, 300, 400), scene(9, 1, 500, 380), scene(9, 2, 200, 640)]
    batch = make_batch([ir.prepare(image) for image in images], ir.card.size_divisor)
    assert len({tuple(size) for size in batch.image_sizes}) == 3  # three contents padded to one canvas
    together = ir.detect(images)
    for image, joint in zip(images, together):
        [alone] = ir.detect([image])
        assert len(alone) == len(joint) > 0
        np.testing.assert_allclose(alone.boxes, joint.boxes, atol=1e-2)
        np.testing.assert_allclose(alone.scores, joint.scores, atol=1e-4)


def test_min_by_arithmetic_leaves_no_sym_min_and_keeps_min_nms_pre_hw_on_both_sides():
    """top_candidates keeps k = min(nms_pre, h * w) locations: converted after the rewrite, the
    count must follow h * w below nms_pre and stop at it above."""

    class Candidates(torch.nn.Module):
        def forward(self, scores, distances):  # [1, 2, h, w], [1, 4, h, w]
            return top_candidates(scores, distances, stride=8, nms_pre=6)

    h, w = torch.export.Dim("h", min=1, max=64), torch.export.Dim("w", min=1, max=64)
    example = (torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 4, 4))
    program = torch.export.export(Candidates(), example, dynamic_shapes={"scores": {2: h, 3: w}, "distances": {2: h, 3: w}})
    rewritten = min_by_arithmetic(program)
    targets = [node.target for node in rewritten.graph_module.graph.nodes if node.op == "call_function"]
    assert torch.sym_min not in targets and operator.floordiv in targets
    compiled = ov.Core().compile_model(ov.convert_model(rewritten), "CPU")
    for height, width in ((1, 1), (1, 5), (2, 3), (3, 3), (8, 40)):
        level_scores = np.random.default_rng(height * width).random(size=(1, 2, height, width)).astype(np.float32)
        boxes, scores = compiled([level_scores, np.ones((1, 4, height, width), np.float32)]).values()
        expected_boxes, expected_scores = top_candidates(torch.from_numpy(level_scores), torch.ones(1, 4, height, width), 8, 6)
        assert boxes.shape == (1, min(6, height * width), 4), (height, width)
        order = np.argsort(-scores.max(axis=2)[0])  # OpenVINO's TopK need not sort like torch's
        np.testing.assert_allclose(scores[0, order], expected_scores[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(boxes[0, order], expected_boxes[0].numpy(), atol=1e-5)


def export(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfnet.server.cli", "export", "openvino", *flags], capture_output=True, text=True, timeout=300)


def test_export_openvino_errors_are_clear(tiny_checkpoint, tmp_path):
    (tmp_path / "a_file").write_text("x")
    done = export("--weights", str(tiny_checkpoint), "--out", str(tmp_path / "a_file"))
    assert done.returncode == 2 and "is a file; give a folder" in done.stderr and "Traceback" not in done.stderr
    done = export("--weights", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "ir"))
    assert done.returncode == 1 and "missing.safetensors" in done.stderr and "Traceback" not in done.stderr
    done = export("--weights", str(tiny_checkpoint), "--out", str(tmp_path / "ir"), "--max-detections", "0")
    assert done.returncode == 2 and "--max-detections must be at least 1" in done.stderr
    assert not (tmp_path / "ir").exists()

"""`vfnet export openvino --int8`: the demo IR quantized by NNCF (a few calibration images, through
the runtime's pre-processing): every convolution reads quantized data, the decoding and NMS tail
has no quantizer, the card says int8, the backend reads back what runs, and its detections are the
float32 IR's within quantization error; the command's clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")
torch = pytest.importorskip("torch")

from torchvision.ops import box_iou  # noqa: E402

from vfnet.export.int8 import calibration_images  # noqa: E402
from vfnet.export.openvino_int8 import float_tail, quantize_openvino_int8  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.backends.openvino_backend import native_bf16  # noqa: E402

from .test_int8_export import scene  # noqa: E402

CALIBRATION_IMAGES = 2  # enough to test the path; the shipped default is 32 (the accuracy is measured in docs/benchmarks.md)


@pytest.fixture(scope="module")
def demo_ir_int8(demo_ir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov_calibration")
    for i in range(CALIBRATION_IMAGES):
        (folder / f"{i:02d}.jpg").write_bytes(scene(31, i))
    return quantize_openvino_int8(demo_ir, tmp_path_factory.mktemp("ov_int8"), calibration_images(folder, CALIBRATION_IMAGES))


def test_every_convolution_reads_quantized_data_and_the_tail_stays_float(demo_ir, demo_ir_int8):
    fp32, int8 = ov.Core().read_model(str(demo_ir)), ov.Core().read_model(str(demo_ir_int8))
    assert [(p.get_any_name(), str(p.get_partial_shape())) for p in int8.inputs] == [(p.get_any_name(), str(p.get_partial_shape())) for p in fp32.inputs]
    assert [(p.get_any_name(), str(p.get_partial_shape())) for p in int8.outputs] == [(p.get_any_name(), str(p.get_partial_shape())) for p in fp32.outputs]
    convolutions = [op for op in int8.get_ops() if op.get_type_name() == "Convolution"]
    assert len(convolutions) == 78
    for conv in convolutions:
        source = conv.input_value(0).get_node()
        if source.get_type_name() == "MaxPool":  # a max of quantized values is quantized: NNCF quantizes before it
            source = source.input_value(0).get_node()
        assert source.get_type_name() == "FakeQuantize", conv.get_friendly_name()
    tail = set(float_tail(int8))
    assert {"NonMaxSuppression", "TopK", "Exp"} <= {op.get_type_name() for op in int8.get_ops() if op.get_friendly_name() in tail}
    assert [op.get_friendly_name() for op in int8.get_ops() if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in tail] == []


def test_the_backend_reports_int8_and_the_detections_are_the_float_irs(demo_ir, demo_ir_int8):
    served = load_detector(demo_ir_int8)
    assert served.card.precision == "int8" and served.loaded.backend == "openvino"
    assert served.loaded.precision == ("int8+bf16" if native_bf16(ov.Core()) else "int8+fp32")
    int8 = load_detector(demo_ir_int8, precision="fp32")
    assert int8.loaded.precision == "int8+fp32"
    assert_detects_like(load_detector(demo_ir, precision="fp32"), int8)


def assert_detects_like(fp32, int8) -> None:
    """Every detection of the float32 detector above 0.5 on 3 held-out scenes (another seed than the
    calibration's) is found by the int8 one: same class, IoU >= 0.7, score within 0.15."""
    matched = 0
    for i in range(3):
        image = scene(77, i)
        want, got = fp32.detect([image], score_threshold=0.5)[0], int8.detect([image], score_threshold=0.3)[0]
        for box, label, score in zip(want.boxes, want.labels, want.scores):
            same = got.labels == label
            assert same.any(), f"scene {i}: no int8 detection of class {label}"
            iou = box_iou(torch.tensor(box[None]), torch.tensor(got.boxes[same]))[0].numpy()
            best = int(iou.argmax())
            assert iou[best] >= 0.7 and abs(got.scores[same][best] - score) <= 0.15, (i, label, iou[best], score, got.scores[same][best])
            matched += 1
    assert matched >= 5


def export(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfnet.server.cli", "export", "openvino", *flags], capture_output=True, text=True, timeout=300)


def test_int8_flag_errors_are_clear(tiny_checkpoint, tmp_path):
    out = tmp_path / "ir"
    done = export("--weights", str(tiny_checkpoint), "--out", str(out), "--int8")
    assert done.returncode == 2 and "--int8 needs --calibration DIR" in done.stderr and "Traceback" not in done.stderr
    done = export("--weights", str(tiny_checkpoint), "--out", str(out), "--calibration", str(tmp_path))
    assert done.returncode == 2 and "--calibration is for --int8" in done.stderr
    (tmp_path / "empty").mkdir()
    done = export("--weights", str(tiny_checkpoint), "--out", str(out), "--int8", "--calibration", str(tmp_path / "empty"))
    assert done.returncode == 1 and "no .jpg/" in done.stderr and str(tmp_path / "empty") in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()

"""Detector: rescaling to original pixels, per-request filters, loading errors, and life without torch."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from PIL import Image

from vfnet.server.runtime import Detector, ModelCard, ModelLoadError, load_detector


class FixedBackend:
    """Stands in for a model in these unit tests: returns the same three detections (resized pixels)."""

    name, device, precision = "fixed", "cpu", "fp32"

    def __init__(self, max_detections=5):
        self.card = ModelCard(
            preset="test", class_names=("cat", "dog", "fox"), precision="fp32", input_size=(512, 512), size_divisor=32,
            max_detections=max_detections, score_threshold=0.05, iou_threshold=0.6, pixel_mean=(0, 0, 0),
            pixel_std=(1, 1, 1), version="0",
        )  # fmt: skip
        self.calls = []

    def run(self, batch, iou_threshold):
        self.calls.append((batch.images.shape, batch.image_sizes.tolist(), iou_threshold))
        batch, k = batch.images.shape[0], self.card.max_detections
        boxes = np.zeros((batch, k, 4), np.float32)
        boxes[:, :3] = [[0, 0, 256, 128], [10, 20, 30, 40], [100, 100, 512, 256]]
        scores = np.zeros((batch, k), np.float32)
        scores[:, :3] = [0.9, 0.5, 0.2]
        labels = np.full((batch, k), -1, np.int64)
        labels[:, :3] = [1, 0, 1]
        return boxes, scores, labels, np.full(batch, 3, np.int64)


def test_boxes_come_back_in_original_pixels():
    detector = Detector(FixedBackend())
    [result] = detector.detect([np.zeros((250, 1000, 3), np.uint8)])  # resized to 128 x 512 (factor 0.512)
    assert (result.width, result.height) == (1000, 250)
    np.testing.assert_allclose(result.boxes[0], [0, 0, 500, 250], rtol=1e-6)
    assert result.class_names == ["dog", "cat", "dog"] and result.labels.tolist() == [1, 0, 1]


def test_filters_and_iou_reach_the_backend():
    backend = FixedBackend()
    detector = Detector(backend)
    image = np.zeros((64, 64, 3), np.uint8)
    assert detector.detect([image], score_threshold=0.3)[0].scores.tolist() == pytest.approx([0.9, 0.5])
    assert detector.detect([image], classes=["dog"])[0].class_names == ["dog", "dog"]
    assert detector.detect([image], classes=[0])[0].class_names == ["cat"]
    assert len(detector.detect([image], max_detections=1)[0]) == 1
    detector.detect([image, image], iou_threshold=0.45)
    assert backend.calls[-1] == ((2, 3, 512, 512), [[512, 512], [512, 512]], 0.45)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(classes=["wolf"]), "unknown class 'wolf'; this model knows: cat, dog, fox"),
        (dict(score_threshold=1.5), "score_threshold must be between 0 and 1"),
        (dict(iou_threshold=-0.1), "iou_threshold must be between 0 and 1"),
        (dict(score_threshold=float("nan")), "score_threshold must be a finite number between 0 and 1, got nan"),
        (dict(iou_threshold=float("inf")), "iou_threshold must be a finite number between 0 and 1, got inf"),
        (dict(max_detections=-1), r"max_detections must be a whole number from 0 to 5 \(the model's limit\), got -1"),
        (dict(max_detections=6), r"from 0 to 5 \(the model's limit\), got 6"),
        (dict(max_detections=float("nan")), "max_detections must be a whole number from 0 to 5"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        Detector(FixedBackend()).detect([np.zeros((8, 8, 3), np.uint8)], **options)


def test_images_of_different_canvases_never_share_a_backend_call():
    backend = FixedBackend()
    detector = Detector(backend)
    square, wide, square_too = (np.zeros(shape, np.uint8) for shape in ((64, 64, 3), (100, 400, 3), (300, 300, 3)))
    results = detector.detect([square, wide, square_too])
    assert [(r.width, r.height) for r in results] == [(64, 64), (400, 100), (300, 300)]  # input order kept
    assert [call[:2] for call in backend.calls] == [((2, 3, 512, 512), [[512, 512], [512, 512]]), ((1, 3, 128, 512), [[128, 512]])]


def test_a_result_does_not_depend_on_its_batch(tiny_onnx, photo_like_images):
    """The same image alone, and batched with images of other shapes (which would pad it to a larger
    canvas), gives the same detections: same count and labels, boxes and scores equal to 1e-5."""
    detector = load_detector(tiny_onnx, intra_op_threads=2)
    image = photo_like_images[0]
    [alone] = detector.detect([image], score_threshold=0.05)
    wide = np.tile(photo_like_images[2], (1, 2, 1))  # 97 x 826: a canvas wider than the image's
    batched = detector.detect([wide, image, photo_like_images[1], image], score_threshold=0.05)
    for together in (batched[1], batched[3]):
        assert len(together) == len(alone) > 0 and together.labels.tolist() == alone.labels.tolist()
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-5, rtol=0)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5, rtol=0)


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_detector(tmp_path / "missing.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="cannot load it as an ONNX model"):
        load_detector(text)
    foreign = tmp_path / "identity.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)]), str(foreign))
    with pytest.raises(ModelLoadError, match="not exported by vfnet-serve"):
        load_detector(foreign)
    with pytest.raises(ModelLoadError, match="unknown backend 'tensorflow'"):
        load_detector(foreign, backend="tensorflow")


def test_raw_graph_is_refused(tiny_onnx_raw):
    with pytest.raises(ModelLoadError, match="exported with --raw"):
        load_detector(tiny_onnx_raw)


def test_runtime_works_without_torch(tiny_onnx, photo_like_images):
    buffer = io.BytesIO()
    Image.fromarray(photo_like_images[0]).save(buffer, "PNG")
    png = buffer.getvalue()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from vfnet.server.runtime import load_detector
        detector = load_detector({str(tiny_onnx)!r})
        [result] = detector.detect([sys.stdin.buffer.read()])
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(len(result), result.width, result.height, detector.loaded.backend)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], input=png, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    count, width, height, backend = done.stdout.decode().split()
    assert int(count) > 0 and (int(width), int(height)) == (320, 240) and backend == "onnxruntime"

"""`--sampled-star`: the star convolution as GridSample + a 1x1 convolution (export/star_sampling.py)
computes what the DeformConv computes: in PyTorch, in ONNX Runtime's GridSample with star points
inside, on the edge of and outside the map, and for the whole demo through the served runtime; and
its int8 export quantizes the 1x1 convolution and has no DeformConv left. (OpenVINO's --sampled-star
is another form: test_star_gather.py.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from torchvision.ops import box_iou  # noqa: E402
from torchvision.ops import deform_conv2d as tv_deform_conv2d  # noqa: E402

from vfnet.export import export_onnx  # noqa: E402
from vfnet.export.int8 import quantize_int8  # noqa: E402
from vfnet.export.star_sampling import SampledStarConv, with_sampled_stars  # noqa: E402
from vfnet.model import load_checkpoint  # noqa: E402
from vfnet.model.head import StarDeformConv2d, star_dcn_offset  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX  # noqa: E402

from .test_int8_export import scene  # noqa: E402

STRIDE = 8


def star_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [1, 6, 9, 11] and boxes [1, 4, 9, 11] (l, t, r, b pixels) from 0 to 12 cells: many
    star points fall between cells, on the map's edge and outside it."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 6, 9, 11, generator=generator)
    boxes = torch.rand(1, 4, 9, 11, generator=generator) * 12 * STRIDE
    return x, boxes


def reference(conv: StarDeformConv2d, x: torch.Tensor, boxes: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    return tv_deform_conv2d(x, star_dcn_offset(boxes, stride), conv.weight, padding=(1, 1))


class Star(torch.nn.Module):
    """One star convolution rewritten as `form` (SampledStarConv here, GatheredStarConv in
    test_star_gather.py) at a fixed stride, as a graph of its own."""

    def __init__(self, conv: StarDeformConv2d, form=SampledStarConv, stride: int = STRIDE):
        super().__init__()
        self.star, self.stride = form(conv), stride

    def forward(self, x, boxes):
        return self.star(x, boxes, self.stride)


@pytest.fixture(scope="module")
def star():
    torch.manual_seed(0)
    conv = StarDeformConv2d(6, 5).eval()
    return conv, Star(conv).eval()


def test_the_samplings_and_1x1_conv_are_the_deform_conv_in_pytorch(star):
    conv, sampled = star
    x, boxes = star_inputs()
    with torch.no_grad():
        torch.testing.assert_close(sampled(x, boxes), reference(conv, x, boxes), atol=1e-5, rtol=1e-5)


def test_onnx_runtimes_grid_sample_samples_as_the_deform_conv_does(star, tmp_path):
    import onnxruntime as ort

    conv, sampled = star
    x, boxes = star_inputs(1)
    with torch.no_grad():
        want = reference(conv, x, boxes).numpy()
    path = tmp_path / "star.onnx"
    torch.onnx.export(sampled, (x, boxes), str(path), input_names=["x", "boxes"], output_names=["y"], dynamo=True, opset_version=19)
    assert Counter(n.op_type for n in onnx.load(str(path)).graph.node)["GridSample"] == 1
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "boxes": boxes.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def demo_sampled(tmp_path_factory):
    """The demo exported with --sampled-star (float32)."""
    return export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path_factory.mktemp("sampled") / "demo_sampled.onnx", sampled_star=True).path


def test_the_sampled_demo_detects_what_the_standard_one_does(demo_sampled):
    counts = Counter(n.op_type for n in onnx.load(str(demo_sampled)).graph.node)
    assert counts["DeformConv"] == 0 and counts["GridSample"] == 10  # two star convolutions at each of 5 levels
    standard, sampled = load_detector(DEMO_ONNX, device="cpu"), load_detector(demo_sampled, device="cpu")
    assert sampled.card == standard.card
    assert_same_detections(standard, sampled)


def assert_same_detections(standard, other) -> None:
    """`other` finds what `standard` finds on 3 held-out scenes: the same labels in the same order,
    IoU >= 0.999, |dscore| <= 1e-4, at least 10 detections compared."""
    compared = 0
    for i in range(3):
        image = scene(77, i)
        want, got = standard.detect([image])[0], other.detect([image])[0]
        assert got.labels.tolist() == want.labels.tolist()
        assert box_iou(torch.tensor(want.boxes), torch.tensor(got.boxes)).diagonal().min() >= 0.999
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
        compared += len(want.labels)
    assert compared >= 10


def test_int8_quantizes_the_1x1_convolution_of_the_star(demo_sampled, tmp_path):
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(scene(31, i))
    out = tmp_path / "demo_sampled_int8.onnx"
    quantize_int8(demo_sampled, out, sorted(folder.glob("*.jpg")))
    graph = onnx.load(str(out)).graph
    produced_by = {output: node for node in graph.node for output in node.output}
    star_convs = [n for n in graph.node if n.op_type == "Conv" and "dconv.weight" in n.input[1]]  # the 1x1s, by their weight's name
    assert len(star_convs) == 10
    assert all(produced_by[n.input[0]].op_type == produced_by[n.input[1]].op_type == "DequantizeLinear" for n in star_convs)
    assert Counter(n.op_type for n in graph.node)["DeformConv"] == 0
    assert load_detector(out, device="cpu").card.precision == "int8"


def test_a_model_without_star_convolutions_is_refused():
    from vfnet.model import build_vfnet

    with pytest.raises(ValueError, match="no star deformable convolution"):
        with_sampled_stars(build_vfnet("vfnet_r18_demo", class_names=["a"], star_dcn=False))

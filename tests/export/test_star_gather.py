"""`vfnet export openvino --sampled-star`: the star convolution as a Gather of its 25 bilinear corners
and one matrix product (export/star_gather.py) computes what the DeformConv computes: in PyTorch and
in OpenVINO (star points inside, on the edge of and outside the map; positions exact in bfloat16 on
a map wider than bfloat16's whole numbers), and for the whole demo IR through the served runtime; and
NNCF quantizes the product but not the geometry, so the int8 IR detects what the float one does."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from vfnet.export.star_gather import TAP_OF_CORNER, GatheredStarConv  # noqa: E402
from vfnet.model import load_checkpoint  # noqa: E402
from vfnet.model.head import StarDeformConv2d  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX  # noqa: E402

from .test_int8_export import scene  # noqa: E402
from .test_openvino_int8 import assert_detects_like  # noqa: E402
from .test_star_sampling import Star, assert_same_detections, reference, star_inputs  # noqa: E402


@pytest.fixture(scope="module")
def star():
    torch.manual_seed(0)
    conv = StarDeformConv2d(6, 5).eval()
    return conv, Star(conv, GatheredStarConv).eval()


def test_25_corners_a_cell_4_at_corner_points_2_at_edge_points_1_at_the_centre():
    assert Counter(TAP_OF_CORNER) == {0: 4, 2: 4, 6: 4, 8: 4, 1: 2, 3: 2, 5: 2, 7: 2, 4: 1}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gathered_corners_and_product_are_the_deform_conv_in_pytorch_and_openvino(star, seed):
    conv, gathered = star
    x, boxes = star_inputs(seed)
    x, boxes = torch.cat([x, -x]), torch.cat([boxes, boxes.flip(-1)])  # two images: the Gather's rows are per image
    with torch.no_grad():
        want = reference(conv, x, boxes)
        torch.testing.assert_close(gathered(x, boxes), want, atol=1e-5, rtol=1e-5)
    network = ov.convert_model(gathered, example_input=(x, boxes))
    kinds = Counter(op.get_type_name() for op in network.get_ops())
    assert kinds["Gather"] >= 1 and kinds["MatMul"] == 1 and kinds["GridSample"] == kinds["DeformableConvolution"] == 0
    compiled = ov.Core().compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled([x.numpy(), boxes.numpy()])[0], want.numpy(), atol=1e-5)


def test_positions_stay_whole_pixels_when_the_runtime_computes_in_bfloat16():
    """A map 300 cells wide: in bfloat16 (8 significant bits) column 299 is 300, and the fraction of
    a point at 260.4 is gone; computed as integers and fractions, only the products round."""
    torch.manual_seed(1)
    conv = StarDeformConv2d(4, 3).eval()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 3, 300, generator=generator)
    boxes = torch.rand(1, 4, 3, 300, generator=generator) * 2.5  # stride 1: up to 2.5 cells, so most points fall between cells
    with torch.no_grad():
        want = reference(conv, x, boxes, stride=1).numpy()
    network = ov.convert_model(Star(conv, GatheredStarConv, stride=1).eval(), example_input=(x, boxes))
    compiled = ov.Core().compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    got = compiled([x.numpy(), boxes.numpy()])[0]
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()  # bfloat16's own rounding: a few per cent at most


@pytest.fixture(scope="module")
def demo_ir_gathered(tmp_path_factory):
    """The demo as an IR with --sampled-star (float32; ~90 s)."""
    from vfnet.export.openvino_export import export_openvino

    return export_openvino(load_checkpoint(DEMO_CHECKPOINT), tmp_path_factory.mktemp("ir_gathered"), sampled_star=True).path


def test_the_gathered_demo_ir_detects_what_the_standard_onnx_does(demo_ir_gathered):
    kinds = Counter(op.get_type_name() for op in ov.Core().read_model(str(demo_ir_gathered)).get_ops())
    assert kinds["DeformableConvolution"] == 0 and kinds["MatMul"] == 10  # two star convolutions at each of 5 levels
    standard, gathered = load_detector(DEMO_ONNX, device="cpu"), load_detector(demo_ir_gathered, precision="fp32")
    assert_same_detections(standard, gathered)


def test_int8_quantizes_the_product_not_the_geometry_and_detects_what_float_does(demo_ir_gathered, tmp_path):
    pytest.importorskip("nncf")
    from vfnet.export.openvino_int8 import quantize_openvino_int8, star_geometry

    geometry = set(star_geometry(ov.Core().read_model(str(demo_ir_gathered))))
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(scene(31, i))
    out = quantize_openvino_int8(demo_ir_gathered, tmp_path / "int8", sorted(folder.glob("*.jpg")))
    network = ov.Core().read_model(str(out))
    kept_float = Counter(op.get_type_name() for op in network.get_ops() if op.get_friendly_name() in geometry)
    assert kept_float >= Counter({"Floor": 10, "Divide": 5, "Multiply": 10})
    quantized = [op for op in network.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert [op.get_friendly_name() for op in quantized if any(t.get_node().get_friendly_name() in geometry for t in op.output(0).get_target_inputs())] == []
    products = [op for op in network.get_ops() if op.get_type_name() == "MatMul"]
    assert len(products) == 10
    for product in products:  # the weighted corners reach each product quantized (through reshapes), the weight is stored int8
        corners, weight = product.input_value(0).get_node(), product.input_value(1).get_node()
        while corners.get_type_name() == "Reshape":
            corners = corners.input_value(0).get_node()
        while weight.get_type_name() in ("Multiply", "Subtract", "Convert"):  # NNCF's dequantization of a stored int8 weight
            weight = weight.input_value(0).get_node()
        assert (corners.get_type_name(), weight.get_output_element_type(0).get_type_name()) == ("FakeQuantize", "i8"), product.get_friendly_name()
    assert_detects_like(load_detector(demo_ir_gathered, precision="fp32"), load_detector(out))  # int8 with bf16 where the CPU has it


def test_star_geometry_is_empty_without_gathered_stars(demo_ir):
    from vfnet.export.openvino_int8 import star_geometry

    assert star_geometry(ov.Core().read_model(str(demo_ir))) == []

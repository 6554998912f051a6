"""The CPU pre-flight of an ONNX graph against TensorRT's ONNX parser (preflight.py): our exported
graphs pass it (the committed demo, a --plugin export of it), the int8 export is refused for what
TensorRT cannot take, small graphs breaking one rule each are refused naming the node and the rule,
and `vfnet export trt` refuses such a graph in one line, with or without TensorRT."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from vfnet.server.runtime import ModelLoadError
from vfnet.server.runtime.artifact import ModelCard, write_onnx_card
from vfnet.server.runtime.backends.tensorrt.preflight import MAX_LISTED, preflight, require_preflight
from vfnet.server.runtime.backends.tensorrt.preflight_rules import TOPK_MAX_K
from vfnet.server.runtime.load import DEMO_ONNX

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def value(name: str, elem_type: int, shape) -> object:
    return helper.make_tensor_value_info(name, elem_type, shape)


def constant(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = 19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("trt.plugins", 1)])


def problems(proto) -> list[str]:
    return [str(problem) for problem in preflight(proto)]


def star(name: str = "star", features: int = FLOAT, bbox: int = FLOAT, weight: int = FLOAT, **attributes):
    """One StarDeformConv node (features, bbox_init, weight -> out) as the only node of a graph."""
    node = helper.make_node("StarDeformConv", ["x", "bbox", "w"], ["y"], name=name, domain="trt.plugins", **attributes)
    inputs = [value("x", features, [1, 8, 16, 16]), value("bbox", bbox, [1, 4, 16, 16]), value("w", weight, [8, 8, 3, 3])]
    return model([node], inputs, [value("y", features, [1, 8, 16, 16])])


# ---- Our exported graphs. ----


@pytest.fixture(scope="module")
def demo_plugin_onnx(tmp_path_factory):
    """The demo checkpoint exported with --plugin (StarDeformConv nodes; ~30 s)."""
    pytest.importorskip("torch")
    from vfnet.export import export_onnx
    from vfnet.model import load_checkpoint
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    return export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path_factory.mktemp("preflight") / "demo_plugin.onnx", plugin=True).path


def test_the_committed_demo_graph_passes():
    assert preflight(DEMO_ONNX) == []


def test_a_plugin_export_of_the_demo_passes(demo_plugin_onnx):
    import onnx

    nodes = onnx.load(str(demo_plugin_onnx), load_external_data=False).graph.node
    assert sum(n.domain == "trt.plugins" and n.op_type == "StarDeformConv" for n in nodes) == 10  # the plugin rules ran
    assert preflight(demo_plugin_onnx) == []


def test_the_int8_export_is_refused_for_asymmetric_quantisation_and_int32_biases(photo_like_images, tmp_path):
    """The int8 graph is ONNX Runtime's (uint8 activations with zero points, int32 biases): TensorRT
    quantises symmetrically to INT8 only, and says so for every such node."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from vfnet.export.int8 import quantize_int8

    images = []
    for i, image in enumerate(photo_like_images[:2]):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG")
        images.append(tmp_path / f"{i}.jpg")
        images[-1].write_bytes(buffer.getvalue())
    int8 = tmp_path / "demo_int8.onnx"
    quantize_int8(DEMO_ONNX, int8, images)
    found = preflight(int8)
    assert {(p.op_type, p.rule.split("; ")[-1]) for p in found} == {
        ("QuantizeLinear", "TensorRT supports symmetric quantisation only"),
        ("DequantizeLinear", "TensorRT supports symmetric quantisation only"),
        ("DequantizeLinear", "TensorRT's DequantizeLinear takes INT8, FP8, FP4, INT4"),
    }


# ---- Small graphs: one passing everything, then one rule broken at a time. ----


def test_a_graph_within_every_rule_passes():
    """UINT8 input read by Shape and Cast, TopK with K = the limit and with a K bounded by Min,
    NonMaxSuppression with thresholds that are graph inputs (TensorRT 10 takes them as tensors),
    Resize as our FPN does it, and a well-formed StarDeformConv."""
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"], name="shape"),
        helper.make_node("Cast", ["images"], ["x"], name="cast", to=FLOAT),
        helper.make_node("Reshape", ["x", "flat"], ["row"], name="row"),
        helper.make_node("TopK", ["row", "limit"], ["top_v", "top_i"], name="top"),
        helper.make_node("ReduceProd", ["shape", "axis0"], ["count"], name="count", keepdims=1),
        helper.make_node("Min", ["count", "thousand"], ["k"], name="k"),
        helper.make_node("TopK", ["row", "k"], ["some_v", "some_i"], name="some"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "per_class", "iou", "floor"], ["selected"], name="nms"),
        helper.make_node("Resize", ["x", "", "twice"], ["up"], name="up", mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("StarDeformConv", ["x", "bbox", "w"], ["y"], name="star", domain="trt.plugins", stride=8),
    ]
    inputs = [
        value("images", TensorProto.UINT8, [1, 8, 16, 16]),
        value("boxes", FLOAT, [1, 100, 4]),
        value("scores", FLOAT, [1, 3, 100]),
        value("iou", FLOAT, [1]),
        value("floor", FLOAT, [1]),
        value("bbox", FLOAT, [1, 4, 16, 16]),
        value("w", FLOAT, [8, 8, 3, 3]),
    ]
    outputs = [value(name, FLOAT, None) for name in ("top_v", "some_v", "up", "y")] + [value("selected", INT64, None)]
    initializers = [
        constant("flat", [1, -1]),
        constant("limit", [TOPK_MAX_K]),
        constant("axis0", [0]),
        constant("thousand", [1000]),
        constant("per_class", [100]),
        constant("twice", [1, 1, 2, 2], np.float32),
    ]
    assert problems(model(nodes, inputs, outputs, initializers)) == []


def test_an_operator_without_an_importer_is_refused():
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob")
    assert problems(model([node], [value("x", FLOAT, [1])], [value("y", FLOAT, [1])])) == [
        "Frobnicate node 'frob': TensorRT's parser has no importer for ai.onnx 'Frobnicate' (it would look for a plugin of that name and find none)"
    ]


def test_an_operator_of_another_domain_is_refused():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    proto = model([node], [value("x", FLOAT, [1])], [value("y", FLOAT, [1])])
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert problems(proto) == ["FusedConv node 'fused': domain 'com.microsoft' is neither ai.onnx nor trt.plugins: TensorRT's parser has no importer for it"]


def test_a_type_the_operator_does_not_take_is_refused_naming_the_input():
    relu = helper.make_node("Relu", ["x"], ["y"], name="relu")
    where = helper.make_node("Where", ["c", "a", "b"], ["z"], name="pick")
    inputs = [value("x", TensorProto.INT8, [4]), value("c", TensorProto.BOOL, [4]), value("a", FLOAT, [4]), value("b", TensorProto.UINT8, [4])]
    assert problems(model([relu, where], inputs, [value("y", TensorProto.INT8, [4]), value("z", FLOAT, [4])])) == [
        "Relu node 'relu': input 0 'x' is INT8; TensorRT's Relu takes FP32, FP16, BF16, INT32, INT64",
        "Where node 'pick': input 2 'b' is UINT8; TensorRT's Where takes FP32, FP16, BF16, INT32, INT64, BOOL",
    ]


def test_a_uint8_tensor_inside_the_graph_is_refused():
    nodes = [helper.make_node("Cast", ["x"], ["u8"], name="to_u8", to=TensorProto.UINT8), helper.make_node("Cast", ["u8"], ["y"], name="back", to=FLOAT)]
    assert problems(model(nodes, [value("x", FLOAT, [4])], [value("y", FLOAT, [4])])) == [
        "Cast node 'to_u8': output 0 'u8' is UINT8; TensorRT allows UINT8 only for the graph's inputs and outputs"
    ]


def topk(k_input: str, initializers=(), extra_nodes=(), extra_inputs=()):
    node = helper.make_node("TopK", ["x", k_input], ["v", "i"], name="top")
    inputs = [value("x", FLOAT, [1, 10000]), *extra_inputs]
    return model([*extra_nodes, node], inputs, [value("v", FLOAT, None), value("i", INT64, None)], initializers)


@pytest.mark.parametrize("k", [TOPK_MAX_K + 1, 5000, 0])
def test_a_constant_k_outside_tensorrts_topk_limit_is_refused(k):
    assert problems(topk("k", [constant("k", [k])])) == [f"TopK node 'top': K is [{k}]; TensorRT's TopK takes one K from 1 to 3840"]


def test_a_run_time_k_without_a_bound_within_the_limit_is_refused():
    unbounded = topk("k", extra_inputs=[value("k", INT64, [1])])
    too_high = topk("k", [constant("cap", [4000])], [helper.make_node("Min", ["n", "cap"], ["k"], name="k")], [value("n", INT64, [1])])
    advice = "TensorRT's TopK fails at run time for K above 3840 (make K a constant, or Min(..., a constant <= 3840))"
    assert problems(unbounded) == [f"TopK node 'top': K 'k' is computed at run time and has no upper bound here; {advice}"]
    assert problems(too_high) == [f"TopK node 'top': K 'k' is computed at run time and can reach 4000; {advice}"]


def test_topk_must_be_sorted():
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top", sorted=0)
    proto = model([node], [value("x", FLOAT, [1, 10])], [value("v", FLOAT, None), value("i", INT64, None)], [constant("k", [5])])
    assert problems(proto) == ["TopK node 'top': attribute sorted = 0; TensorRT supports 1"]


def test_non_maximum_suppression_needs_3d_boxes_single_limits_and_a_known_box_format():
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "per_class", "iou"], ["selected"], name="nms", center_point_box=2)
    inputs = [value("boxes", FLOAT, [100, 4]), value("scores", FLOAT, [1, 3, 100]), value("iou", FLOAT, [2])]
    proto = model([node], inputs, [value("selected", INT64, None)], [constant("per_class", [100])])
    assert problems(proto) == [
        "NonMaxSuppression node 'nms': attribute center_point_box = 2; TensorRT supports 0, 1",
        "NonMaxSuppression node 'nms': input 0 (boxes) 'boxes' has rank 2; TensorRT's NonMaxSuppression needs 3-D boxes and scores",
        "NonMaxSuppression node 'nms': input 3 (iou_threshold) 'iou' has shape [2]; TensorRT needs a single value",
    ]


def test_axes_that_are_not_constants_are_refused():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum")
    proto = model([node], [value("x", FLOAT, [2, 3]), value("axes", INT64, [1])], [value("y", FLOAT, None)])
    assert problems(proto) == ["ReduceSum node 'sum': input 1 (axes) 'axes' must be a constant (an initializer or a Constant node's output)"]


def test_a_resize_mode_tensorrt_lacks_is_refused():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")
    proto = model([node], [value("x", FLOAT, [1, 1, 4, 4])], [value("y", FLOAT, None)], [constant("scales", [1, 1, 2, 2], np.float32)])
    assert problems(proto) == ["Resize node 'up': attribute mode = 'cubic'; TensorRT supports nearest, linear"]


def test_deform_conv_needs_equal_padding_at_both_ends():
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", pads=[1, 1, 0, 0])
    inputs = [value("x", FLOAT, [1, 4, 8, 8]), value("w", FLOAT, [4, 4, 3, 3]), value("offset", FLOAT, [1, 18, 8, 8])]
    assert problems(model([node], inputs, [value("y", FLOAT, None)])) == [
        "DeformConv node 'dcn': attribute pads = [1, 1, 0, 0]; TensorRT's DeformConv needs the same padding at the beginning and end of each axis"
    ]


def test_a_quantisation_with_a_zero_point_is_refused():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dq"),
    ]
    initializers = [constant("scale", 0.1, np.float32), constant("zero", 128, np.uint8)]
    assert problems(model(nodes, [value("x", FLOAT, [4])], [value("y", FLOAT, [4])], initializers)) == [
        "QuantizeLinear node 'q': zero point 'zero' is not all zeros; TensorRT supports symmetric quantisation only",
        "DequantizeLinear node 'dq': zero point 'zero' is not all zeros; TensorRT supports symmetric quantisation only",
    ]
    symmetric = [constant("scale", 0.1, np.float32), constant("zero", 0, np.uint8)]  # UINT8 becomes INT8 in TensorRT
    assert problems(model(nodes, [value("x", FLOAT, [4])], [value("y", FLOAT, [4])], symmetric)) == []


def test_an_opset_and_a_type_tensorrt_lacks_are_refused_for_the_graph():
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=FLOAT)
    assert problems(model([node], [value("x", TensorProto.UINT16, [4])], [value("y", FLOAT, [4])], opset=25)) == [
        "model: ai.onnx opset 25; TensorRT's parser supports opsets 9 to 24",
        "graph input 'x': type UINT16 has no TensorRT equivalent",
        "Cast node 'cast': input 0 'x' is UINT16; TensorRT's Cast takes FP32, FP16, BF16, INT32, INT64, UINT8, BOOL",
    ]


# ---- Our plugin's nodes against its creator's fields. ----

NO_STRIDE = "StarDeformConv node 'star': the StarDeformConv creator's required field 'stride' (INT32/INT64, the FPN level's stride) has no attribute"


def test_a_star_deform_conv_without_stride_is_refused():
    assert problems(star()) == [NO_STRIDE]


def test_a_misspelt_star_deform_conv_attribute_is_refused():
    assert problems(star(strides=8)) == [
        "StarDeformConv node 'star': attribute 'strides' is not a field of the StarDeformConv creator (its fields: stride); TensorRT would drop it",
        NO_STRIDE,
    ]


@pytest.mark.parametrize(
    "stride, kind, field",
    [(8.0, "FLOAT", "FLOAT32 field of length 1"), ("eight", "STRING", "CHAR field of length 5"), ([8, 8], "INTS", "INT32 field of length 2")],
)
def test_a_mistyped_stride_is_refused(stride, kind, field):
    assert problems(star(stride=stride)) == [
        f"StarDeformConv node 'star': attribute 'stride' is a {kind}, which TensorRT passes as a {field}; "
        "the StarDeformConv creator reads stride as INT32/INT64 of length 1 (write an INT)"
    ]


def test_a_stride_the_creator_refuses_is_refused():
    assert problems(star(stride=0)) == ["StarDeformConv node 'star': attribute stride = 0; the StarDeformConv creator accepts 1..4096 (the FPN level's stride)"]
    assert problems(star(stride=4096)) == []


def test_another_plugin_version_is_refused():
    assert problems(star(stride=8, plugin_version="2")) == ["StarDeformConv node 'star': attribute plugin_version = '2'; the StarDeformConv creator's is '1'"]
    assert problems(star(stride=8, plugin_version="1")) == []


def test_input_types_the_plugin_does_not_take_are_refused():
    assert problems(star(stride=8, bbox=TensorProto.FLOAT16)) == [
        "StarDeformConv node 'star': input 1 (bbox_init) 'bbox' is FLOAT16; StarDeformConv takes FP32"
    ]
    assert problems(star(stride=8, features=TensorProto.FLOAT16)) == [
        "StarDeformConv node 'star': input 2 (weight) 'w' is FLOAT; StarDeformConv takes it in the type of features"
    ]
    assert problems(star(stride=8, features=TensorProto.FLOAT16, weight=TensorProto.FLOAT16)) == []


def test_an_unknown_plugin_of_our_domain_is_refused():
    node = helper.make_node("StarDeformConvV2", ["x"], ["y"], name="v2", domain="trt.plugins", stride=8)
    assert problems(model([node], [value("x", FLOAT, [1])], [value("y", FLOAT, [1])])) == [
        "StarDeformConvV2 node 'v2': trt.plugins has no plugin 'StarDeformConvV2' (ours: StarDeformConv); TensorRT would find no creator for it"
    ]


# ---- The refusal: one line, from the function and from `vfnet export trt`. ----


def test_require_preflight_lists_the_problems_in_one_line():
    nodes = [helper.make_node("Frobnicate", ["x"], [f"y{i}"], name=f"f{i}") for i in range(MAX_LISTED + 2)]
    proto = model(nodes, [value("x", FLOAT, [1])], [value(f"y{i}", FLOAT, [1]) for i in range(MAX_LISTED + 2)])
    with pytest.raises(ModelLoadError) as raised:
        require_preflight(proto, "bad.onnx")
    message = str(raised.value)
    assert message.startswith(f"bad.onnx: TensorRT's ONNX parser would refuse this graph ({MAX_LISTED + 2} problems): Frobnicate node 'f0': ")
    assert message.endswith("; and 2 more") and "\n" not in message and "'f9'" in message and "'f10'" not in message
    require_preflight(DEMO_ONNX)  # passes: nothing raised


def test_a_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.onnx: no such file"):
        preflight(tmp_path / "missing.onnx")


def test_vfnet_export_trt_refuses_such_a_graph_in_one_line_without_tensorrt(tmp_path):
    proto = topk("k", [constant("k", [5000])])
    card = ModelCard(
        preset="bad",
        class_names=("a",),
        precision="fp32",
        input_size=(512, 512),
        size_divisor=32,
        max_detections=100,
        score_threshold=0.05,
        iou_threshold=0.6,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(1.0, 1.0, 1.0),
        version="0",
    )
    write_onnx_card(proto, card)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "export", "trt", "--onnx", str(bad), "--out", str(tmp_path / "bad.engine")], capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: {bad}: TensorRT's ONNX parser would refuse this graph (1 problem): TopK node 'top': K is [5000]; TensorRT's TopK takes one K from 1 to 3840"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]  # no engine, no sidecar

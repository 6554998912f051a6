"""The artifact contract's room: the inputs every backend builds, the tensor-name check, the ONNX
card's write and read, and open_model's choice between a Detector and a model still to be made."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from vfnet.server.runtime import BackendOptions, Detector, ModelCard, ModelLoadError, load_detector, open_model
from vfnet.server.runtime.artifact import INPUTS, OUTPUTS, check_tensor_names, graph_inputs, image_inputs, read_onnx_card, write_onnx_card
from vfnet.server.runtime.images import Batch
from vfnet.server.runtime.load import DEMO_ONNX

CARD = ModelCard(
    preset="vfnet_r18_demo", class_names=("circle", "star"), precision="fp32", input_size=(512, 512), size_divisor=32,
    max_detections=100, score_threshold=0.05, iou_threshold=0.6, pixel_mean=(1.0, 2.0, 3.0), pixel_std=(4.0, 5.0, 6.0),
    version="0.1.0",
)  # fmt: skip


def test_graph_inputs_are_the_contracts_names_and_types():
    batch = Batch(np.zeros((2, 3, 64, 96), np.uint8), np.array([[64, 96], [32, 40]], np.int32))
    feeds = graph_inputs(batch, 0.45)
    assert tuple(feeds) == INPUTS == ("images", "image_sizes", "iou_threshold")
    assert feeds["images"] is batch.images
    assert feeds["image_sizes"].dtype == np.int64 and feeds["image_sizes"].tolist() == [[64, 96], [32, 40]]
    assert feeds["iou_threshold"].dtype == np.float32 and feeds["iou_threshold"].tolist() == [pytest.approx(0.45)]


def test_image_inputs_go_through_the_one_pre_processing():
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 20, 30)).save(buffer, "PNG")
    feeds = image_inputs(buffer.getvalue(), CARD)
    assert feeds["images"].shape == (1, 3, 256, 512)  # fit 512: 512 x 256, already a multiple of 32
    assert feeds["image_sizes"].tolist() == [[256, 512]] and feeds["iou_threshold"].tolist() == [pytest.approx(0.6)]
    assert feeds["images"][0, :, 0, 0].tolist() == [10, 20, 30]


def test_tensor_names_in_any_order_pass_and_a_missing_one_is_named():
    check_tensor_names("m.onnx", reversed(INPUTS), reversed(OUTPUTS))
    with pytest.raises(ModelLoadError, match=r"m.onnx: inputs \['images', 'image_sizes'\] and outputs .*expected \['images', 'image_sizes', 'iou_threshold'\]"):
        check_tensor_names("m.onnx", INPUTS[:2], OUTPUTS)


def test_the_onnx_card_replaces_whatever_metadata_was_there_and_reads_back(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph)
    helper.set_model_props(proto, {"quantizer": "left over", "format": "someone else's"})
    write_onnx_card(proto, CARD)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    assert read_onnx_card(path) == CARD
    assert {p.key for p in onnx.load(str(path)).metadata_props} == set(CARD.to_metadata())  # nothing else kept
    with pytest.raises(ModelLoadError, match="no such file"):
        read_onnx_card(tmp_path / "missing.onnx")


def test_open_model_serves_a_file_at_once_and_checks_options_first(tmp_path):
    served = open_model(DEMO_ONNX, "auto", BackendOptions(device="cpu", intra_op_threads=1))
    assert isinstance(served, Detector) and served.loaded.backend == "onnxruntime" and served.card.preset == "vfnet_r18_demo"
    with pytest.raises(ModelLoadError, match="precision bf16 applies to the openvino backend"):
        open_model(DEMO_ONNX, "onnxruntime", BackendOptions(precision="bf16"))
    with pytest.raises(ModelLoadError, match="intra_op_threads must be a whole number of at least 1, got 0"):
        BackendOptions(intra_op_threads=0)
    with pytest.raises(ModelLoadError, match="unknown backend 'tflite'"):
        open_model(DEMO_ONNX, "tflite")


def test_fp32_means_fp32_on_a_gpu_unless_tf32_is_asked_for():
    auto, tf32 = BackendOptions(), BackendOptions(precision="tf32")
    fp16 = dataclasses.replace(CARD, precision="fp16")
    assert auto.artifact_precision("torch", CARD, "cuda") == "fp32" and auto.artifact_precision("torch", fp16, "cuda") == "fp16"
    assert tf32.artifact_precision("onnxruntime", CARD, "cuda") == "tf32"
    with pytest.raises(ModelLoadError, match="precision tf32 is a GPU arithmetic .* onnxruntime runs this model on the CPU here"):
        tf32.artifact_precision("onnxruntime", CARD, "cpu")
    with pytest.raises(ModelLoadError, match="precision tf32 applies to a float32 model; this one computes in fp16"):
        tf32.artifact_precision("tensorrt", fp16, "cuda")
    with pytest.raises(ModelLoadError, match="precision bf16 applies to the openvino backend"):
        BackendOptions(precision="bf16").artifact_precision("torch", CARD, "cuda")
    with pytest.raises(ModelLoadError, match="precision tf32 is a GPU arithmetic .* on the CPU here"):
        load_detector(DEMO_ONNX, device="cpu", precision="tf32")

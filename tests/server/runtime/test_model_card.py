"""The model card: one writer, one reader, files of the current exporter, and errors that name keys."""

from __future__ import annotations

import onnx
import pytest

from vfnet.server.runtime import ModelCard, ModelLoadError, load_detector

# metadata_props exactly as `vfnet export onnx` wrote them before plugin graphs existed (the bundled demo's)
WRITTEN = {
    "format": "vfnet-serve",
    "graph": "detections",
    "precision": "fp32",
    "preset": "vfnet_r18_demo",
    "class_names": '["circle", "triangle", "rectangle", "star", "ring", "cross", "hexagon", "arrow"]',
    "max_detections": "100",
    "score_threshold": "0.05",
    "iou_threshold": "0.6",
    "input_size": "[512, 512]",
    "size_divisor": "32",
    "pixel_mean": "[123.675, 116.28, 103.53]",
    "pixel_std": "[58.395, 57.12, 57.375]",
    "version": "0.1.0",
}


def test_metadata_of_earlier_exports_reads_and_writes_back_with_no_plugins():
    card = ModelCard.from_metadata(WRITTEN, source="demo.onnx")
    assert card.class_names[3] == "star" and card.input_size == (512, 512) and card.score_threshold == 0.05
    assert card.pixel_std == (58.395, 57.12, 57.375) and card.graph == "detections" and card.plugins == ()
    assert card.score == "iacs"  # files from before the ablation's variants rank by the IACS
    assert card.to_metadata() == {**WRITTEN, "plugins": "[]", "score": "iacs"}


def test_a_plugin_graphs_card_round_trips():
    meta = {**WRITTEN, "plugins": '["StarDeformConv"]', "score": "iacs"}
    card = ModelCard.from_metadata(meta, source="plugin.onnx")
    assert card.plugins == ("StarDeformConv",) and card.to_metadata() == meta


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(format="onnxmltools"), r"m.onnx: not exported by vfnet-serve \(no format=vfnet-serve metadata\)"),
        (dict(preset=None, class_names=None), "missing class_names, preset"),
        (dict(author="me", license="MIT"), "unknown author, license"),
        (dict(input_size="[512]"), r"input_size='\[512\]': expected JSON list of int \(2 items\)"),
        (dict(class_names='["a", 3]'), "class_names=.*item 3 is not a str"),
        (dict(class_names="[]"), "class_names must be a non-empty list"),
        (dict(max_detections="many"), "max_detections='many': expected int"),
        (dict(precision="int4"), "precision 'int4' is not one of fp32, fp16, int8"),
        (dict(iou_threshold="1.5"), r"iou_threshold must lie in \[0, 1\]"),
        (dict(score="objectness"), "score 'objectness' is not one of iacs, cls_x_centerness"),
    ],
)
def test_bad_metadata_is_a_load_error_naming_the_keys(change, message):
    meta = {k: v for k, v in {**WRITTEN, **change}.items() if v is not None}
    with pytest.raises(ModelLoadError, match=message):
        ModelCard.from_metadata(meta, source="m.onnx")


def test_an_onnx_file_with_an_extra_key_is_refused_by_name(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    model.metadata_props.add(key="calibration", value="none")
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    with pytest.raises(ModelLoadError, match=r"edited.onnx \(an ONNX model\): .*unknown calibration"):
        load_detector(edited)


def test_every_backend_reads_the_same_card(tiny_onnx, tiny_checkpoint):
    """The ONNX export writes the card the torch backend builds from the checkpoint: one writer."""
    onnx_detector, torch_detector = load_detector(tiny_onnx), load_detector(tiny_checkpoint)
    assert onnx_detector.card == torch_detector.card
    assert (onnx_detector.loaded.backend, torch_detector.loaded.backend) == ("onnxruntime", "torch")
    assert torch_detector.loaded.source == str(tiny_checkpoint) and torch_detector.loaded.device == "cpu"

"""`vfnet export onnx --plugin`: StarDeformConv nodes instead of the offset sub-graph and DeformConv,
and the plugin graph served on the CPU (the host build as ONNX Runtime custom operators) detects
what the standard graph detects."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import onnx
import pytest

from vfnet.export import export_onnx
from vfnet.model import build_vfnet
from vfnet.server.evaluate import evaluate
from vfnet.server.runtime import ModelLoadError, load_detector
from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX
from vfnet.train.synth import generate

from .test_onnx_export import assert_same_detections


@pytest.fixture(scope="module")
def tiny_plugin_onnx(tiny_model, tmp_path_factory):
    return export_onnx(tiny_model, tmp_path_factory.mktemp("plugin") / "tiny_plugin.onnx", plugin=True).path


def node_counts(path) -> collections.Counter:
    model = onnx.load(str(path), load_external_data=False)
    return collections.Counter((node.domain, node.op_type) for node in model.graph.node)


def test_the_star_convolutions_become_plugin_nodes_fed_by_the_box(tiny_plugin_onnx, tiny_model):
    model = onnx.load(str(tiny_plugin_onnx), load_external_data=False)
    plugin_nodes = [n for n in model.graph.node if n.op_type == "StarDeformConv"]
    strides = tiny_model.config.strides
    assert len(plugin_nodes) == 2 * len(strides) and all(n.domain == "trt.plugins" for n in plugin_nodes)
    assert sorted(onnx.helper.get_attribute_value(n.attribute[0]) for n in plugin_nodes) == sorted(list(strides) * 2)
    assert not any(n.op_type in ("DeformConv", "ScatterND") for n in model.graph.node)  # no offset sub-graph, no star DeformConv
    assert ("trt.plugins", 1) in {(o.domain, o.version) for o in model.opset_import}
    assert {p.key: p.value for p in model.metadata_props}["plugins"] == '["StarDeformConv"]'
    weights = {i.name for i in model.graph.initializer}
    assert all(n.input[2] in weights for n in plugin_nodes)  # the weight is the node's third input


def test_dcnv2_layers_stay_standard_deform_conv(tmp_path):
    model = build_vfnet("vfnet_r18_demo", depth=50, dcn_stages=(False, False, False, True), dcn_on_last_conv=True, fpn_channels=32, feat_channels=32)
    counts = node_counts(export_onnx(model, tmp_path / "mdconv_plugin.onnx", plugin=True, raw=True).path)
    levels = len(model.config.strides)
    assert counts[("trt.plugins", "StarDeformConv")] == 2 * levels
    assert counts[("", "DeformConv")] == 3 + 2 * levels  # DCNv2 in layer4's 3 blocks, and the last conv of both towers at each level


@pytest.mark.parametrize("count", [1, 3])
def test_the_plugin_graph_detects_what_the_standard_graph_detects(tiny_plugin_onnx, tiny_onnx, photo_like_images, count):
    plugin, standard = load_detector(tiny_plugin_onnx), load_detector(tiny_onnx)
    assert plugin.card.plugins == ("StarDeformConv",) and standard.card.plugins == ()
    images = photo_like_images[:count]  # three sizes: three canvases
    for got, want in zip(plugin.detect(images, score_threshold=0.05), standard.detect(images, score_threshold=0.05)):
        assert_same_detections(got, want)


def test_the_plugin_graph_runs_without_torch(tiny_plugin_onnx):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        from vfnet.server.runtime import load_detector
        [result] = load_detector({str(tiny_plugin_onnx)!r}).detect([np.full((200, 300, 3), 90, np.uint8)])
        print(len(result) > 0)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_a_float16_plugin_graph_is_refused_on_the_cpu_with_the_reason(tiny_plugin_onnx, tmp_path):
    """The runtime refuses by the card's precision (an --fp16 export writes fp16 there: test_fp16_graph),
    so the float32 plugin graph with its card saying fp16 stands for an `--fp16 --plugin` export."""
    model = onnx.load(str(tiny_plugin_onnx))
    next(p for p in model.metadata_props if p.key == "precision").value = "fp16"
    path = tmp_path / "fp16_plugin.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="float32 only"):
        load_detector(path)


def test_eval_of_the_demo_through_the_plugin_graph_gives_the_standard_graphs_ap(tmp_path):
    data = generate(tmp_path / "val", images=24, seed=4242, size=384).parent
    from vfnet.model import load_checkpoint

    plugin = export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path / "demo_plugin.onnx", plugin=True).path
    with_plugin = evaluate(load_detector(plugin, max_pixels=None), data)
    standard = evaluate(load_detector(DEMO_ONNX, max_pixels=None), data)
    assert with_plugin["AP"] > 0.5
    assert all(abs(with_plugin[k] - standard[k]) <= 1e-3 for k in standard if standard[k] is not None), (with_plugin, standard)


def test_when_the_tensorrt_provider_refuses_the_plugin_graph_its_nodes_run_on_the_cpu(tiny_plugin_onnx, photo_like_images, monkeypatch, caplog):
    """No TensorRT provider here, so the session that names it cannot place StarDeformConv anywhere and
    fails, exactly as it does when a real provider refuses the node: the fallback must serve anyway."""
    from vfnet.server.runtime.backends import onnxruntime_plugins

    monkeypatch.setattr(onnxruntime_plugins, "tensorrt_provider", lambda available: ("TensorrtExecutionProvider", {}))
    with caplog.at_level("WARNING", logger="vfnet.runtime"):
        detector = load_detector(tiny_plugin_onnx, device="auto")
    assert "TensorRT provider refused the plugin graph" in caplog.text and "run on the CPU instead" in caplog.text
    assert detector.loaded.device == "cpu" and detector.loaded.precision == "fp32"
    [got] = detector.detect(photo_like_images[:1])
    [want] = load_detector(tiny_plugin_onnx, device="cpu").detect(photo_like_images[:1])
    assert len(got) == len(want) > 0 and (got.labels == want.labels).all()

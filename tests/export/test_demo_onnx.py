"""The committed demo ONNX (weights stored as float16) computes what the demo checkpoint computes."""

from __future__ import annotations

import numpy as np
import onnx

from vfnet.export.fp16_storage import store_weights_as_float16
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX
from vfnet.train.synth import render_image

from .test_onnx_export import assert_same_detections


def test_the_committed_demo_onnx_detects_what_the_checkpoint_detects():
    assert DEMO_ONNX.stat().st_size < 30e6, "keep the repository light"
    served, reference = load_detector(DEMO_ONNX, intra_op_threads=2), load_detector(DEMO_CHECKPOINT, intra_op_threads=2)
    images = [render_image(np.random.default_rng([7001, i]), 384, 512)[0] for i in range(6)]  # a seed no training set uses
    for got, want in zip(served.detect(images, score_threshold=0.05), reference.detect(images, score_threshold=0.05)):
        assert_same_detections(got, want)
    stored = {i.data_type for i in onnx.load(str(DEMO_ONNX), load_external_data=False).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in stored


def test_float16_storage_restores_float32_weights_exactly_or_leaves_them():
    rng = np.random.default_rng(0)
    checkpoint = rng.standard_normal((8, 4, 3, 3)).astype(np.float16).astype(np.float32)  # float16 values
    exact = rng.standard_normal((64, 8)).astype(np.float16).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, (8, 1, 1, 1)).astype(np.float32)
    folded = checkpoint * scale  # what BatchNorm folding makes of it: not float16-exact any more
    unrelated = rng.standard_normal((300,)).astype(np.float32)
    tensors = {"conv.weight": folded, "fc.weight": exact, "other": unrelated}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", [name], [f"{name}.out"]) for name in tensors],
        "g",
        [],
        [onnx.helper.make_tensor_value_info(f"{name}.out", onnx.TensorProto.FLOAT, list(t.shape)) for name, t in tensors.items()],
        initializer=[onnx.numpy_helper.from_array(t, name) for name, t in tensors.items()],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    counts = store_weights_as_float16(model, {"conv.weight": checkpoint})
    assert counts == {"exact": 1, "rebuilt": 1, "kept": 1}
    onnx.checker.check_model(model, full_check=True)
    import onnxruntime as ort

    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    np.testing.assert_allclose(outputs[0], folded, rtol=1e-6, atol=1e-7)
    assert np.array_equal(outputs[1], exact) and np.array_equal(outputs[2], unrelated)

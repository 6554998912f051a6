"""Store an exported graph's weights in float16 without changing what it computes.

The exporter folds each BatchNorm into the convolution before it, so a folded weight is no longer
float16-exact even when the checkpoint is float16 (the bundled demo model). But it is the
checkpoint's weight times one factor per output channel. So each float32 initializer of at least
MIN_ELEMENTS values is stored, when its values allow, as:

- float16 followed by a Cast to float32, when every value is exactly a float16; or
- the checkpoint's float16 weight (a Cast) times a float32 per-channel scale (a Mul), when that
  rebuilds the folded weight to 1e-6 of its largest value.

Anything else stays float32. ONNX Runtime folds the added Cast and Mul nodes once, when it loads
the file, so inference runs on float32 weights at full speed: about half the file, the same
detections.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_ELEMENTS = 256  # smaller tensors save too little to be worth a node
REBUILD_TOLERANCE = 1e-6  # relative to the largest value of the weight


def store_weights_as_float16(model: onnx.ModelProto, reference: dict[str, np.ndarray]) -> dict[str, int]:
    """Rewrite `model` in place. `reference`: the checkpoint's float tensors by name (float32 arrays
    holding float16 values). Returns how many initializers were stored exactly, rebuilt from the
    reference, or kept in float32."""
    added, counts = [], {"exact": 0, "rebuilt": 0, "kept": 0}
    for initializer in model.graph.initializer:
        if initializer.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < MIN_ELEMENTS:
            continue
        name, half = initializer.name, values.astype(np.float16)
        if np.array_equal(half.astype(np.float32), values):
            initializer.CopyFrom(numpy_helper.from_array(half, f"{name}.float16"))
            added.append(helper.make_node("Cast", [f"{name}.float16"], [name], to=onnx.TensorProto.FLOAT))
            counts["exact"] += 1
            continue
        scale = _channel_scale(reference.get(name), values)
        if scale is None:
            counts["kept"] += 1
            continue
        initializer.CopyFrom(numpy_helper.from_array(reference[name].astype(np.float16), f"{name}.float16"))
        model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}.scale"))
        added.append(helper.make_node("Cast", [f"{name}.float16"], [f"{name}.float32"], to=onnx.TensorProto.FLOAT))
        added.append(helper.make_node("Mul", [f"{name}.float32", f"{name}.scale"], [name]))
        counts["rebuilt"] += 1
    nodes = added + list(model.graph.node)  # before every use: the graph stays topologically sorted
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return counts


def _channel_scale(base: np.ndarray | None, folded: np.ndarray) -> np.ndarray | None:
    """s [C, 1, ...] with base * s == folded to REBUILD_TOLERANCE, if there is one (least squares
    per output channel, then checked); None otherwise."""
    if base is None or base.shape != folded.shape or not np.array_equal(base.astype(np.float16).astype(np.float32), base):
        return None
    w = base.reshape(len(base), -1).astype(np.float64)  # [C, rest]
    v = folded.reshape(len(folded), -1).astype(np.float64)
    scale = ((w * v).sum(axis=1) / np.maximum((w * w).sum(axis=1), 1e-30)).astype(np.float32)
    scale = scale.reshape(-1, *[1] * (base.ndim - 1))  # [C] -> [C, 1, ..., 1], broadcast over the rest
    if np.abs(base * scale - folded).max() > REBUILD_TOLERANCE * np.abs(folded).max():
        return None
    return scale

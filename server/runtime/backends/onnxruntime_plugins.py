"""Our TensorRT plugins' ONNX nodes on ONNX Runtime: each node of the `trt.plugins` domain runs the
plugin's host build (vfnet.trt_plugins, built by `make plugins`) as a Python custom operator.

Why this way: ONNX Runtime's C/C++ API headers are not on PyPI, so no C++ custom-op library can be
built on our machines; onnxruntime-extensions runs Python custom operators, but only in its own
domain `ai.onnx.contrib`. The file on disk keeps `trt.plugins` (what TensorRT's ONNX parser and ONNX
Runtime's TensorRT execution provider look for), and this module renames the domain in memory
before the session is made. Each call crosses into Python once per node; the arithmetic is the
plugin's own C++ (the same core as the CUDA kernel), float32 only.
"""

from __future__ import annotations

import functools
import mmap
from pathlib import Path

from ..artifact import ModelLoadError, onnx_card

PLUGIN_DOMAIN = "trt.plugins"
CONTRIB_DOMAIN = "ai.onnx.contrib"  # the one domain of onnxruntime-extensions' Python operators
SUPPORTED = ("StarDeformConv",)
INSTALL = "pip install 'vfnet-serve[plugins]' (onnx and onnxruntime-extensions)"


def uses_plugins(path: Path) -> bool:
    """Whether the ONNX file imports the plugin domain (a byte search: no parsing, no onnx package)."""
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(PLUGIN_DOMAIN.encode()) >= 0


def tensorrt_provider(available: list[str]) -> tuple[str, dict] | None:
    """ONNX Runtime's TensorRT execution provider with our plugin library, when this onnxruntime has
    it (onnxruntime-gpu built with TensorRT 10) and `make plugins` built the library; else None.
    The provider dlopens the register-at-load library and finds StarDeformConv in domain trt.plugins."""
    if "TensorrtExecutionProvider" not in available:
        return None
    from vfnet.trt_plugins import PluginNotBuilt, library_path

    try:
        plugins = library_path("vfnet_trt_plugins_autoregister")
    except PluginNotBuilt:
        return None
    return "TensorrtExecutionProvider", {"trt_extra_plugin_lib_paths": str(plugins)}


def plugin_model(path: Path) -> bytes:
    """The model with its plugin nodes moved to ONNX Runtime's custom-op domain, serialised."""
    try:
        import onnx
    except ImportError:
        raise ModelLoadError(f"{path}: a --plugin export; running its plugin nodes on the CPU needs {INSTALL}") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError and friends: not a protobuf at all
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if onnx_card(model, f"{path} (an ONNX model)").precision == "fp16":
        raise ModelLoadError(f"{path}: a float16 plugin graph; its plugin nodes run on the CPU in float32 only (an --fp16 --plugin export is for TensorRT)")
    unknown = sorted({n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN} - set(SUPPORTED))
    if unknown:
        raise ModelLoadError(f"{path}: plugin nodes {', '.join(unknown)} have no CPU implementation here (known: {', '.join(SUPPORTED)})")
    for node in model.graph.node:
        if node.domain == PLUGIN_DOMAIN:
            node.domain = CONTRIB_DOMAIN
    for opset in model.opset_import:
        if opset.domain == PLUGIN_DOMAIN:
            opset.domain = CONTRIB_DOMAIN
    return model.SerializeToString()


def register_plugin_ops(options) -> None:
    """Register the plugins' CPU operators in `options` (an onnxruntime.SessionOptions)."""
    options.register_custom_ops_library(_define_operators())


@functools.cache
def _define_operators() -> str:
    """Define the Python operators once per process (onnxruntime-extensions refuses a second
    definition); returns the library that runs them."""
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise ModelLoadError(f"running a --plugin export's plugin nodes on the CPU needs {INSTALL}") from None
    from vfnet.trt_plugins import PluginNotBuilt, library_path, star_deform_conv

    try:
        library_path("vfnet_star_deform_conv_host")
    except PluginNotBuilt as exc:
        raise ModelLoadError(str(exc)) from None

    @onnx_op(
        op_type="StarDeformConv",
        inputs=[PyCustomOpDef.dt_float] * 3,  # features, bbox_init, weight
        outputs=[PyCustomOpDef.dt_float],
        attrs={"stride": PyCustomOpDef.dt_int64},
    )
    def star_deform_conv_op(features, bbox_init, weight, **attributes):
        return star_deform_conv(features, bbox_init, weight, int(attributes["stride"]))

    return get_library_path()

"""OpenVINO backend: runs an IR from `vfnet export openvino` (model.xml + model.bin) on the CPU.

options.precision picks OpenVINO's inference precision for the IR's float32 weights:
    "auto"  bfloat16 where the CPU computes it natively (AVX512_BF16 or AMX: OpenVINO lists "BF16"
            among the CPU's optimisation capabilities), else float32;
    "fp32"  float32 everywhere;
    "bf16"  bfloat16, or ModelLoadError on a CPU without it (OpenVINO would quietly run float32).
The compiled model's own precision, read back, becomes `precision`, reported by /v1/model and
vfnet_model_info. An int8 IR (`vfnet export openvino --int8`) is reported as "int8+bf16" or
"int8+fp32": its quantized convolutions run in int8 (read back from the compiled model's runtime
graph) and what NNCF left in float runs in the precision above.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..artifact import OUTPUTS, ModelLoadError, check_tensor_names, graph_inputs, read_openvino_card
from ..images import Batch
from . import BackendOptions


def native_bf16(core) -> bool:
    """Whether OpenVINO (`core`, an openvino.Core) computes bfloat16 natively on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def reason(exc: Exception) -> str:
    """The line of an OpenVINO error that says what failed (the others name source files and checks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith(("Exception from", "Check '"))]
    return lines[-1] if lines else type(exc).__name__


def int8_convolutions(compiled) -> int:
    """How many convolutions of `compiled` (an openvino.CompiledModel) the CPU plugin runs on 8-bit
    integers, from its runtime graph (each node's runtimePrecision)."""
    count = 0
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution" and info["runtimePrecision"].astype(str).lower() in ("i8", "u8"):
            count += 1
    return count


def cpu_bf16_flags() -> list[str]:
    """This CPU's bfloat16 flags from /proc/cpuinfo (for messages; OpenVINO's view decides)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [flag for flag in flags if flag in ("avx512_bf16", "amx_bf16")]


class OpenVINOBackend:
    """Serves `path` (an IR .xml with its .bin beside it) on the CPU.

    options.intra_op_threads: OpenVINO's inference threads (None: its default, every core);
    inter_op_threads has no OpenVINO counterpart here (one request runs at a time) and is ignored.
    """

    name = "openvino"

    def __init__(self, path: Path, options: BackendOptions):
        if options.device == "cuda":
            raise ModelLoadError("the openvino backend runs on the CPU; for a GPU serve an ONNX file with onnxruntime or tensorrt")
        precision = options.precision
        if precision == "tf32":
            raise ModelLoadError("precision tf32 is a GPU arithmetic; the openvino backend runs on the CPU: use auto, fp32 or bf16")
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError("the openvino backend needs OpenVINO: pip install 'vfnet-serve[openvino]'") from None
        if path.suffix != ".xml":
            raise ModelLoadError(f"{path}: the openvino backend serves an OpenVINO IR (.xml + .bin); make one with `vfnet export openvino`")
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelLoadError(f"{path}: its weights {weights.name} are missing (an OpenVINO IR is two files, .xml and .bin, side by side)")
        core = ov.Core()
        try:
            model = core.read_model(str(path), str(weights))
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: OpenVINO cannot read it as an IR ({reason(exc)})") from None
        self.card = read_openvino_card(model, source=f"{path} (an OpenVINO IR)")
        check_tensor_names(str(path), (p.get_any_name() for p in model.inputs), (p.get_any_name() for p in model.outputs))

        wanted = "bf16" if precision == "bf16" or (precision == "auto" and native_bf16(core)) else "fp32"
        config = {"INFERENCE_PRECISION_HINT": "bf16" if wanted == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
        if options.intra_op_threads is not None:
            config["INFERENCE_NUM_THREADS"] = options.intra_op_threads
        try:
            compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: OpenVINO cannot compile it for the CPU ({reason(exc)})") from None
        # What the compiled model runs, read back: on a CPU without bf16 OpenVINO falls back to f32.
        rest = "bf16" if compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"
        self.precision = f"int8+{rest}" if self.card.precision == "int8" and int8_convolutions(compiled) > 0 else rest
        if precision == "bf16" and rest != "bf16":
            flags = ", ".join(cpu_bf16_flags()) or "neither avx512_bf16 nor amx_bf16"
            raise ModelLoadError(
                f"precision bf16 asked for, but this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')}; {flags}) has no native bfloat16; use fp32 or auto"
            )
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one call at a time
        self.device = "cpu"

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, ...]:
        with self._lock:
            results = self._request.infer(graph_inputs(batch, iou_threshold))
            return tuple(np.array(results[name]) for name in OUTPUTS)  # copies: the request reuses its buffers

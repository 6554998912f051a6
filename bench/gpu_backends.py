"""Every GPU backend side by side: torch CUDA eager, ONNX Runtime CUDA, TensorRT with its native
DeformConv importer, TensorRT with our StarDeformConv plugin; float32 and float16; batch 1 and 8;
for vfnet_r50_fpn at 800x1344 (random weights: speed does not depend on them, but NMS load does, so
the classification prior keeps detections few, as trained models do) and the demo model at 512x512.

    python bench/gpu_backends.py [--iterations 50] [--models r50,demo]
Needs a CUDA GPU, TensorRT, onnxruntime-gpu, `make plugins` with the TensorRT headers. Reports
latency p50 / p99 of one backend call (the batch of padded images in, detections out), images/s and
the share of the time spent in the star convolutions (torch's profiler; TensorRT's layer profiler).
Writes the "## GPU backends" section of docs/benchmarks.md, naming the GPU.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import gpu_description, publish  # noqa: E402

from vfnet.export import export_onnx  # noqa: E402
from vfnet.model import build_vfnet, load_checkpoint  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.images import Batch  # noqa: E402
from vfnet.server.runtime.load import DEMO_CHECKPOINT  # noqa: E402

TITLE = "## GPU backends"
PAPER_FPS = 19.4  # VFNet R-50 1x on one V100, PyTorch/mmdet (hyz-xmaster/VarifocalNet README)


def timings_ms(call, iterations: int) -> np.ndarray:
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()  # every backend returns host arrays: the call has finished when it returns
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def star_share_torch(model, images, sizes, iou) -> float:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(images, sizes, iou)
        torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events)
    star = sum(e.self_device_time_total for e in events if "deform_conv2d" in e.key)
    return star / total if total else float("nan")


def star_node_names(onnx_path: Path) -> set[str]:
    """Names of the star convolution nodes (DeformConv or our StarDeformConv) in an ONNX file:
    TensorRT names each layer after the node(s) it came from."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {node.name for node in graph.node if node.op_type in ("DeformConv", "StarDeformConv")}


def star_share_tensorrt(backend, images, sizes, iou, star_nodes: set[str]) -> float:
    import tensorrt as trt

    class Profiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.layers: dict[str, float] = {}

        def report_layer_time(self, layer_name, ms):
            self.layers[layer_name] = self.layers.get(layer_name, 0.0) + ms

    profiler = Profiler()
    backend.context.profiler = profiler
    backend.run(Batch(images, sizes), iou)
    backend.context.profiler = None
    total = sum(profiler.layers.values())
    # a layer's name holds the names of the nodes it came from (joined with " + " when fused)
    star = sum(ms for layer, ms in profiler.layers.items() if any(node in layer for node in star_nodes))
    return star / total if total else float("nan")


def engine(onnx_path: Path, out: Path, batch: int) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "export", "trt", "--onnx", str(onnx_path), "--out", str(out), "--max-batch", str(batch)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return out


def rows_for(name: str, model, canvas: tuple[int, int], iterations: int, folder: Path) -> list[str]:
    height, width = canvas
    rows = []
    exports = {
        (precision, plugin): export_onnx(model, folder / f"{name}_{precision}{'_plugin' if plugin else ''}.onnx", fp16=precision == "fp16", plugin=plugin).path
        for precision in ("fp32", "fp16")
        for plugin in (False, True)
    }
    for batch in (1, 8):
        images = np.random.default_rng(0).integers(0, 255, (batch, 3, height, width), dtype=np.uint8)
        sizes = np.tile(np.array([[height, width]], np.int64), (batch, 1))
        for precision in ("fp32", "fp16"):
            # a copy per precision: model.half() in place would leave later float32 rows with float16-rounded weights
            eager = copy.deepcopy(model).to("cuda", torch.float16 if precision == "fp16" else torch.float32).eval()
            timg, tsize, tiou = torch.from_numpy(images).cuda(), torch.from_numpy(sizes).cuda(), torch.tensor([0.6], device="cuda")

            def eager_call():
                with torch.inference_mode():
                    out = eager(timg, tsize, tiou)
                return [t.cpu() for t in out]

            candidates = [("torch CUDA eager", eager_call, star_share_torch(eager, timg, tsize, tiou))]
            ort = load_detector(exports[(precision, False)], device="cuda").backend
            candidates.append(("ONNX Runtime CUDA", lambda: ort.run(Batch(images, sizes), 0.6), float("nan")))
            for label, plugin in (("TensorRT, native DeformConv", False), ("TensorRT, our plugin", True)):
                onnx_path = exports[(precision, plugin)]
                trt_backend = load_detector(engine(onnx_path, folder / f"{name}_{precision}_{plugin}_{batch}.engine", batch)).backend
                share = star_share_tensorrt(trt_backend, images, sizes, 0.6, star_node_names(onnx_path))
                candidates.append((label, lambda b=trt_backend: b.run(Batch(images, sizes), 0.6), share))
            for label, call, share in candidates:
                ms = timings_ms(call, iterations)
                p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
                rows.append(f"| {name} | {batch} | {precision} | {label} | {p50:.2f} | {p99:.2f} | {batch * 1000 / ms.mean():.1f} | {share:.0%} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--models", default="r50,demo")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark runs on a GPU host", file=sys.stderr)
        return 2
    import tensorrt

    models = {
        "vfnet_r50_fpn": (lambda: build_vfnet("vfnet_r50_fpn"), (800, 1344)),
        "vfnet_r18_demo": (lambda: load_checkpoint(DEMO_CHECKPOINT), (512, 512)),
    }
    chosen = {"r50": "vfnet_r50_fpn", "demo": "vfnet_r18_demo"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models.split(","):
            name = chosen[key]
            make, canvas = models[name]
            rows += rows_for(name, make(), canvas, args.iterations, Path(folder))
    lines = [
        TITLE,
        "",
        f"GPU: {gpu_description()}, TensorRT {tensorrt.__version__}. `python bench/gpu_backends.py` ({args.iterations} calls each). "
        "One backend call: padded uint8 images in, detections on the host out. Star share: the star convolutions' share "
        f"of GPU time (torch profiler; TensorRT layer profiler). The paper's VFNet-R50: {PAPER_FPS} images/s on a V100.",
        "",
        "| model | batch | precision | backend | p50 ms | p99 ms | images/s | star share |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return publish(TITLE, lines)


if __name__ == "__main__":
    sys.exit(main())

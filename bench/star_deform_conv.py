"""StarDeformConv on the CPU: the plugin's host build against torchvision's deform_conv2d fed with
the star offsets (what the reference model and the standard ONNX graph compute), on the demo
model's P3 shape; and the demo's plugin graph against its standard graph through the runtime.

Side by side in one run, alternating, best of N; ratios are what to compare across machines.

    python bench/star_deform_conv.py [--repeats 20] [--images 8]
Writes the "## StarDeformConv (CPU)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cpu_description, publish  # noqa: E402

from vfnet.export import export_onnx  # noqa: E402
from vfnet.model import load_checkpoint  # noqa: E402
from vfnet.model.head import star_dcn_offset  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.load import DEMO_CHECKPOINT, DEMO_ONNX  # noqa: E402
from vfnet.train.synth import render_image  # noqa: E402
from vfnet.trt_plugins import star_deform_conv  # noqa: E402

TITLE = "## StarDeformConv (CPU)"


def best_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def op_rows(repeats: int, threads: int) -> list[tuple[str, float, float]]:
    """(shape, host ms, torchvision ms) at the demo's P3 (512 input: 64x64 cells, 64 channels) and a
    wider head (256 channels, the official presets' width) on the same map."""
    rows = []
    rng = np.random.default_rng(0)
    for channels in (64, 256):
        features = rng.standard_normal((1, channels, 64, 64), dtype=np.float32)
        bbox_init = (rng.random((1, 4, 64, 64), dtype=np.float32) * 200).astype(np.float32)
        weight = (rng.standard_normal((channels, channels, 3, 3)) / (channels * 9) ** 0.5).astype(np.float32)
        x, offset, w = torch.from_numpy(features), star_dcn_offset(torch.from_numpy(bbox_init), 8), torch.from_numpy(weight)
        host, reference = [], []
        with torch.inference_mode():
            for _ in range(3):  # alternate, so that both see the same machine state
                host.append(best_ms(lambda: star_deform_conv(features, bbox_init, weight, 8, threads=threads), repeats))
                reference.append(best_ms(lambda: deform_conv2d(x, offset, w, padding=(1, 1)), repeats))
        rows.append((f"[1, {channels}, 64, 64] -> {channels}", min(host), min(reference)))
    return rows


def graph_row(images_count: int, threads: int) -> tuple[float, float, float]:
    """(plugin graph ms per image, standard graph ms per image, AP-free check: max |score diff|)."""
    with tempfile.TemporaryDirectory() as folder:
        plugin_path = export_onnx(load_checkpoint(DEMO_CHECKPOINT), Path(folder) / "demo_plugin.onnx", plugin=True).path
        plugin = load_detector(plugin_path, intra_op_threads=threads)
        standard = load_detector(DEMO_ONNX, intra_op_threads=threads)
        images = [render_image(np.random.default_rng([9100, i]), 384, 512)[0] for i in range(images_count)]
        plugin.detect(images[:1]), standard.detect(images[:1])  # warm up
        timings = {"plugin": [], "standard": []}
        for _ in range(2):
            for name, detector in (("plugin", plugin), ("standard", standard)):
                started = time.perf_counter()
                results = [detector.detect([image])[0] for image in images]
                timings[name].append((time.perf_counter() - started) * 1000 / len(images))
                if name == "plugin":
                    plugin_results = results
                else:
                    difference = max(float(np.abs(a.scores - b.scores).max()) if len(a) == len(b) else float("inf") for a, b in zip(plugin_results, results))
        return min(timings["plugin"]), min(timings["standard"]), difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_description()
    rows = op_rows(args.repeats, args.threads)
    plugin_ms, standard_ms, difference = graph_row(args.images, args.threads)
    lines = [
        TITLE,
        "",
        f"CPU: {cpu}; {args.threads} threads for every party. `python bench/star_deform_conv.py` (best of {args.repeats}, alternating).",
        "",
        "The plugin's host build (`vfnet.trt_plugins.star_deform_conv`: the CUDA kernel's sampling core, "
        "float32 accumulation) against torchvision's CPU `deform_conv2d` fed with the star offsets:",
        "",
        "| features -> C_out | host build ms | torchvision ms | torchvision / host |",
        "|---|---|---|---|",
        *[f"| {shape} | {host:.2f} | {reference:.2f} | **{reference / host:.2f}x** |" for shape, host, reference in rows],
        "",
        f"The demo's plugin graph (`export onnx --plugin`, the host build as ONNX Runtime custom operators) against its "
        f"standard graph (ONNX Runtime's DeformConv), one 512x384 image per call over {args.images} images:",
        "",
        "| graph | ms per image |",
        "|---|---|",
        f"| standard (`vfnet_r18_demo.onnx`) | {standard_ms:.1f} |",
        f"| plugin, CPU path | {plugin_ms:.1f} ({plugin_ms / standard_ms:.2f}x) |",
        "",
        f"Largest score difference between the two over these images: {difference:.1e}. The CPU path of the plugin graph "
        "proves its semantics where no GPU exists; it is not the way to serve on a CPU (each of the 10 plugin nodes "
        "crosses into Python once per call).",
    ]
    return publish(TITLE, lines)


if __name__ == "__main__":
    sys.exit(main())

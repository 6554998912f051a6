"""The CPU fast path, side by side in one run: ONNX Runtime float32, ONNX Runtime int8 (`vfnet
export onnx --int8`: QDQ convolutions, the rest float32) and PyTorch eager, same threads, same
inputs, the full contract (uint8 images in, NMS-ed detections out).

- The demo model: its own weights, int8 calibrated on 32 synthetic scenes of a seed the demo never
  saw. Timed on synthetic scenes (batch 1 and 4, canvases 384×512 and 800×1088).
- vfnet_r50_fpn: random weights (classification bias -3, as in onnx_vs_eager.py), calibrated on
  the same scenes. Batch 1 at 800×1088.

Each row gives the median latency, the ratio to ONNX Runtime float32 and GFLOP/s against the
float32 GEMM rate measured in the same run. The CPU's name and vector flags head the table: the
int8 speed depends on them (VNNI computes int8 dot products in one instruction; AVX2 without it
needs three).

    python bench/cpu_fast_path.py          # writes docs/benchmarks.md (section "CPU fast path")
    python bench/cpu_fast_path.py --quick  # the demo only, batch 1, 384×512; not written
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx_vs_eager import contract_call, gemm_gflops, median_ms, model_gflop  # bench/onnx_vs_eager.py
from PIL import Image
from report import cpu_description, publish  # bench/report.py

from vfnet.export import export_onnx
from vfnet.export.int8 import quantize_int8
from vfnet.model import build_vfnet, load_checkpoint
from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.synth import render_image

SECTION = "## CPU fast path: ONNX Runtime int8 vs float32 (CPU)"


def scenes(count: int, seed: int, height: int = 384, width: int = 512) -> list[np.ndarray]:
    return [render_image(np.random.default_rng([seed, i]), height, width, min_side=48, max_objects=6)[0] for i in range(count)]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rows_for(name: str, model, cases, threads: int, repeats: int, folder: Path) -> list[dict]:
    calibration = folder / f"{name}_calibration"
    calibration.mkdir()
    for i, image in enumerate(scenes(32, seed=41)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        (calibration / f"{i:02d}.jpg").write_bytes(buffer.getvalue())
    fp32_path = export_onnx(model, folder / f"{name}.onnx").path
    int8_path = folder / f"{name}_int8.onnx"
    quantize_int8(fp32_path, int8_path, sorted(calibration.glob("*.jpg")))
    fp32, int8 = session(fp32_path, threads), session(int8_path, threads)
    rows = []
    for batch, canvas in cases:
        pictures = scenes(batch, seed=43, height=canvas[0], width=canvas[1])
        feeds, eager = contract_call(model, np.stack([p.transpose(2, 0, 1) for p in pictures]))  # [B, 3, H, W] uint8 scenes
        timings = {"ORT fp32": [], "ORT int8": [], "eager": []}
        for _ in range(2):  # alternate, so that machine noise hits every path alike
            timings["ORT fp32"].append(median_ms(lambda: fp32.run(None, feeds), max(1, repeats // 2)))
            timings["ORT int8"].append(median_ms(lambda: int8.run(None, feeds), max(1, repeats // 2)))
            timings["eager"].append(median_ms(eager, max(1, repeats // 2)))
        gflop = model_gflop(model, torch.from_numpy(feeds["images"]), torch.from_numpy(feeds["image_sizes"]))
        rows.append({"model": name, "batch": batch, "canvas": canvas, "gflop": gflop, **{k: min(v) for k, v in timings.items()}})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gemm = gemm_gflops(args.threads)
    peak = max(gemm.values())
    demo = load_checkpoint(DEMO_CHECKPOINT).eval()
    torch.manual_seed(0)
    r50 = build_vfnet("vfnet_r50_fpn").eval()
    torch.nn.init.constant_(r50.bbox_head.vfnet_cls.bias, -3.0)
    demo_cases = [(1, (384, 512))] if args.quick else [(b, c) for c in ((384, 512), (800, 1088)) for b in (1, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = rows_for("vfnet_r18_demo", demo, demo_cases, args.threads, 2 if args.quick else args.repeats, Path(tmp))
        if not args.quick:
            rows += rows_for("vfnet_r50_fpn", r50, [(1, (800, 1088))], args.threads, args.repeats, Path(tmp))
    lines = [
        SECTION,
        "",
        f"`python bench/cpu_fast_path.py` on {cpu_description()}, {args.threads} threads, onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}. Full contract, median of repeated runs, the three paths alternated in one process. "
        f"Float32 GEMM peak measured in the same run: {peak:.0f} GFLOP/s. int8: convolutions only (QDQ); DeformConv, "
        "GroupNorm, decoding and NMS stay float32.",
        "",
        "| model | batch | canvas | GFLOP | ORT fp32 ms | ORT int8 ms | **int8 / fp32** | eager ms | eager / fp32 | fp32 % of GEMM peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['canvas'][0]}×{r['canvas'][1]} | {r['gflop']:.1f} | {r['ORT fp32']:.0f} | {r['ORT int8']:.0f} | "
            f"**{r['ORT int8'] / r['ORT fp32']:.2f}** | {r['eager']:.0f} | {r['eager'] / r['ORT fp32']:.2f} | "
            f"{100 * r['gflop'] / r['ORT fp32'] * 1000 / peak:.0f}% |"
        )
    if args.quick:
        print("\n".join(lines))
        return 0
    return publish(SECTION, lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""The CPU fast paths, side by side in one run: ONNX Runtime float32, ONNX Runtime int8 (`vfnet
export onnx --int8`: QDQ convolutions, the rest float32), OpenVINO (`vfnet export openvino`) in
float32 and, where the CPU has it, bfloat16, and PyTorch eager; same threads, same inputs, the full
contract (uint8 images in, NMS-ed detections out): ONNX Runtime through its session, OpenVINO
through its backend (what `vfnet serve` calls).

- The demo model: its own weights, int8 calibrated on 32 synthetic scenes of a seed the demo never
  saw. Timed on synthetic scenes (batch 1 and 4, canvases 384×512 and 800×1088).
- vfnet_r50_fpn: random weights (classification bias -3, as in onnx_vs_eager.py), calibrated on
  the same scenes. The same four cases.

Each row gives the median latency, the ratio to ONNX Runtime float32 and GFLOP/s against the
float32 GEMM rate measured in the same run. The CPU's name and vector flags head the table: the
int8 speed depends on them (VNNI computes int8 dot products in one instruction; AVX2 without it
needs three).

    python bench/cpu_fast_path.py          # writes docs/benchmarks.md (section "CPU fast paths")
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
import openvino
import torch
from onnx_vs_eager import contract_call, gemm_gflops, median_ms, model_gflop  # bench/onnx_vs_eager.py
from PIL import Image
from report import cpu_description, publish  # bench/report.py

from vfnet.export import export_onnx
from vfnet.export.int8 import quantize_int8
from vfnet.export.openvino_export import export_openvino
from vfnet.model import build_vfnet, load_checkpoint
from vfnet.server.runtime.backends import BackendOptions
from vfnet.server.runtime.backends.openvino_backend import OpenVINOBackend, native_bf16
from vfnet.server.runtime.images import Batch
from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.synth import render_image

SECTION = "## CPU fast paths: ONNX Runtime int8 and OpenVINO vs ONNX Runtime float32 (CPU)"


def scenes(count: int, seed: int, height: int = 384, width: int = 512) -> list[np.ndarray]:
    return [render_image(np.random.default_rng([seed, i]), height, width, min_side=48, max_objects=6)[0] for i in range(count)]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


NATIVE_BF16 = native_bf16(openvino.Core())


def call(path, batch: Batch, feeds: dict, iou_threshold: float):
    """One contract call on an ONNX Runtime session or an OpenVINO backend."""
    if isinstance(path, ort.InferenceSession):
        return lambda: path.run(None, feeds)
    return lambda: path.run(batch, iou_threshold)


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
    ir = export_openvino(model, folder / f"{name}_ir").path
    paths = {"ORT fp32": session(fp32_path, threads), "ORT int8": session(int8_path, threads)}
    paths["OV fp32"] = OpenVINOBackend(ir, BackendOptions(precision="fp32", intra_op_threads=threads))
    if NATIVE_BF16:
        paths["OV bf16"] = OpenVINOBackend(ir, BackendOptions(precision="bf16", intra_op_threads=threads))
    rows = []
    for batch, canvas in cases:
        pictures = scenes(batch, seed=43, height=canvas[0], width=canvas[1])
        arrays, feeds, eager = contract_call(model, np.stack([p.transpose(2, 0, 1) for p in pictures]))  # [B, 3, H, W] uint8 scenes
        calls = {path_name: call(path, arrays, feeds, model.config.iou_threshold) for path_name, path in paths.items()} | {"eager": eager}
        timings = {path_name: [] for path_name in calls}
        for _ in range(2):  # alternate, so that machine noise hits every path alike
            for path_name, fn in calls.items():
                timings[path_name].append(median_ms(fn, max(1, repeats // 2)))
        gflop = model_gflop(model, torch.from_numpy(arrays.images), torch.from_numpy(arrays.image_sizes))
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
    cases = [(1, (384, 512))] if args.quick else [(b, c) for c in ((384, 512), (800, 1088)) for b in (1, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = rows_for("vfnet_r18_demo", demo, cases, args.threads, 2 if args.quick else args.repeats, Path(tmp))
        if not args.quick:
            rows += rows_for("vfnet_r50_fpn", r50, cases, args.threads, args.repeats, Path(tmp))
    lines = [
        SECTION,
        "",
        f"`python bench/cpu_fast_path.py` on {cpu_description()}, {args.threads} threads, onnxruntime {ort.__version__}, "
        f"openvino {openvino.__version__}, torch {torch.__version__}. Full contract, median of repeated runs, the paths alternated "
        f"in one process. Float32 GEMM peak measured in the same run: {peak:.0f} GFLOP/s. int8: convolutions only (QDQ); "
        "DeformConv, GroupNorm, decoding and NMS stay float32. "
        + (
            "OpenVINO bf16: its inference precision on this CPU's native bfloat16."
            if NATIVE_BF16
            else "OpenVINO bf16: — (this CPU has no native bfloat16; OpenVINO would run float32)."
        )
        + " A GFLOP/s share above 100% means the 2048² GEMM measured in this run ran slower than ONNX Runtime's convolutions;"
        " compare that column within one table only.",
        "",
        "| model | batch | canvas | GFLOP | ORT fp32 ms | ORT int8 ms | **int8 / fp32** | OV fp32 ms | OV fp32 / ORT fp32 | OV bf16 ms | **OV bf16 / ORT fp32** | eager ms | eager / fp32 | ORT fp32 GFLOP/s (% of GEMM) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bf16 = f"{r['OV bf16']:.0f} | **{r['OV bf16'] / r['ORT fp32']:.2f}**" if "OV bf16" in r else "— | —"
        rate = r["gflop"] / r["ORT fp32"] * 1000
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['canvas'][0]}×{r['canvas'][1]} | {r['gflop']:.1f} | {r['ORT fp32']:.0f} | {r['ORT int8']:.0f} | "
            f"**{r['ORT int8'] / r['ORT fp32']:.2f}** | {r['OV fp32']:.0f} | {r['OV fp32'] / r['ORT fp32']:.2f} | {bf16} | "
            f"{r['eager']:.0f} | {r['eager'] / r['ORT fp32']:.2f} | {rate:.0f} ({100 * rate / peak:.0f}%) |"
        )
    return publish(SECTION, lines, write=not args.quick)


if __name__ == "__main__":
    raise SystemExit(main())

"""The CPU fast paths against ONNX Runtime float32, on the same inputs and threads, the full contract
(uint8 images in, NMS-ed detections out; ONNX Runtime through its session, OpenVINO through its
backend, what `vfnet serve` calls):

    ORT fp32            `vfnet export onnx` (the reference of every ratio)
    ORT int8            `vfnet export onnx --int8`: QDQ convolutions, the star DeformConv float32
    ORT int8 sampled    the same with --sampled-star: the star as GridSample + a quantized 1x1 Conv
    OV fp32, OV bf16    `vfnet export openvino` at --precision fp32, and bf16 where the CPU has it
    OV int8             `vfnet export openvino --int8` (NNCF; the float rest in bf16 where native)
    OV int8 sampled     the same with --sampled-star: the star as a Gather of its 25 corners + a quantized MatMul
    eager               PyTorch

Models: the demo (its own weights) and vfnet_r50_fpn (random weights, classification bias -3, as in
onnx_vs_eager.py); int8 calibrated on 32 synthetic scenes of a seed the demo never saw.

Measurement. A process holding many compiled models ran its first round 2-3x slow, so the paths are
timed in groups of at most four compiled models, each group in its own process, each with ORT fp32
beside it as its reference; in each process one settling round of every path and case is run and
discarded, then rounds alternate the paths, so that machine noise hits them alike; a path's figure is
the lowest of its rounds' medians, and its ratio is to its own group's ORT fp32. The artifacts are
made once (in --artifacts, reused by a later run) by the main process, which times nothing.

    python bench/cpu_fast_path.py                  # writes docs/benchmarks.md (section "CPU fast paths")
    python bench/cpu_fast_path.py --quick          # the demo at batch 1, 384×512; not written
    python bench/cpu_fast_path.py --artifacts DIR  # keep (and reuse) the exported files in DIR
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino
import torch
from PIL import Image
from report import cpu_description, publish  # bench/report.py

from vfnet.model import build_vfnet, load_checkpoint
from vfnet.server.runtime.backends.openvino_backend import native_bf16
from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.synth import render_image

SECTION = "## CPU fast paths: ONNX Runtime int8 and OpenVINO vs ONNX Runtime float32 (CPU)"
NATIVE_BF16 = native_bf16(openvino.Core())
# Each group runs in its own process with ORT fp32 as its reference: at most four compiled models in
# one. A path and its --sampled-star twin share a group: their difference is measured side by side.
GROUPS = {
    "ort": ["ORT fp32", "ORT int8", "ORT int8 sampled"],
    "ov int8": ["ORT fp32", "OV int8", "OV int8 sampled"],
    "float": ["ORT fp32", "OV fp32", *(["OV bf16"] if NATIVE_BF16 else []), "eager"],
}
PATHS = [path for group in GROUPS.values() for path in group[1:]]
CASES = {
    "vfnet_r18_demo": [(1, (384, 512)), (4, (384, 512)), (1, (800, 1088)), (4, (800, 1088))],
    "vfnet_r50_fpn": [(1, (384, 512)), (4, (384, 512)), (1, (800, 1088))],
}


def model_named(name: str):
    if name == "vfnet_r18_demo":
        return load_checkpoint(DEMO_CHECKPOINT).eval()
    torch.manual_seed(0)
    model = build_vfnet("vfnet_r50_fpn").eval()
    torch.nn.init.constant_(model.bbox_head.vfnet_cls.bias, -3.0)
    return model


def scenes(count: int, seed: int, height: int = 384, width: int = 512) -> list[np.ndarray]:
    return [render_image(np.random.default_rng([seed, i]), height, width, min_side=48, max_objects=6)[0] for i in range(count)]


def artifacts(name: str, folder: Path, model=None) -> dict[str, Path]:
    """Every artifact of `name` (`model`, default model_named(name)) in `folder`, made where
    missing: path name -> file ("ORT fp32 sampled" too, the float32 graph with --sampled-star)."""
    make_model = (lambda: model) if model is not None else (lambda: model_named(name))
    from vfnet.export import export_onnx
    from vfnet.export.int8 import quantize_int8
    from vfnet.export.openvino_export import export_openvino
    from vfnet.export.openvino_int8 import quantize_openvino_int8

    folder.mkdir(parents=True, exist_ok=True)
    calibration = folder / "calibration"
    if not calibration.is_dir():
        calibration.mkdir()
        for i, image in enumerate(scenes(32, seed=41)):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=90)
            (calibration / f"{i:02d}.jpg").write_bytes(buffer.getvalue())
    images = sorted(calibration.glob("*.jpg"))
    files = {}
    for sampled in (False, True):
        suffix = " sampled" if sampled else ""
        onnx, ir = folder / f"fp32{'_sampled' * sampled}.onnx", folder / f"ir{'_sampled' * sampled}" / "model.xml"
        steps = [
            (onnx, lambda: export_onnx(make_model(), onnx, sampled_star=sampled)),
            (folder / f"int8{'_sampled' * sampled}.onnx", lambda: quantize_int8(onnx, folder / f"int8{'_sampled' * sampled}.onnx", images)),
            (ir, lambda: export_openvino(make_model(), ir.parent, sampled_star=sampled)),
            (folder / f"ir_int8{'_sampled' * sampled}" / "model.xml", lambda: quantize_openvino_int8(ir, folder / f"ir_int8{'_sampled' * sampled}", images)),
        ]
        for path, make in steps:
            if not path.exists():
                print(f"{name}: making {path.relative_to(folder)} ...", file=sys.stderr, flush=True)
                make()
        files[f"ORT int8{suffix}"] = folder / f"int8{'_sampled' * sampled}.onnx"
        files[f"OV int8{suffix}"] = folder / f"ir_int8{'_sampled' * sampled}" / "model.xml"
    files |= {"ORT fp32": folder / "fp32.onnx", "ORT fp32 sampled": folder / "fp32_sampled.onnx"}
    files |= {"OV fp32": folder / "ir" / "model.xml", "OV bf16": folder / "ir" / "model.xml"}
    return files


def time_group(name: str, group: str, folder: Path, cases, threads: int, rounds: int, repeats: int) -> list[dict]:
    """In this process: compile the group's paths, one settling round (discarded), then `rounds`
    alternated rounds of `repeats` calls per path and case: {"case", "path", "ms"} per path and case."""
    import onnxruntime as ort
    from onnx_vs_eager import contract_call, median_ms  # bench/onnx_vs_eager.py

    from vfnet.server.runtime.backends import BackendOptions
    from vfnet.server.runtime.backends.openvino_backend import OpenVINOBackend

    torch.set_num_threads(threads)
    files, model = artifacts(name, folder), model_named(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    runners = {}
    for path in GROUPS[group]:
        if path.startswith("ORT"):
            runners[path] = ort.InferenceSession(str(files[path]), options, providers=["CPUExecutionProvider"])
        elif path.startswith("OV"):
            precision = {"OV fp32": "fp32", "OV bf16": "bf16"}.get(path, "auto")
            runners[path] = OpenVINOBackend(files[path], BackendOptions(precision=precision, intra_op_threads=threads))
    calls = {}
    for batch, canvas in cases:
        pictures = scenes(batch, seed=43, height=canvas[0], width=canvas[1])
        arrays, feeds, eager = contract_call(model, np.stack([p.transpose(2, 0, 1) for p in pictures]))  # [B, 3, H, W] uint8 scenes
        for path in GROUPS[group]:
            runner = runners.get(path)
            if path == "eager":
                calls[(batch, canvas), path] = eager
            elif path.startswith("ORT"):
                calls[(batch, canvas), path] = lambda runner=runner, feeds=feeds: runner.run(None, feeds)
            else:
                calls[(batch, canvas), path] = lambda runner=runner, arrays=arrays: runner.run(arrays, model.config.iou_threshold)
    for call in calls.values():  # the settling round: discarded
        median_ms(call, 1)
    timings = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            timings[key].append(median_ms(call, repeats))
    return [{"case": [batch, list(canvas)], "path": path, "ms": min(times)} for ((batch, canvas), path), times in timings.items()]


def run_group(name: str, group: str, folder: Path, quick: bool, threads: int, rounds: int, repeats: int) -> list[dict]:
    """time_group in a fresh process (this script with --group)."""
    command = [sys.executable, __file__, "--group", group, "--model", name, "--artifacts", str(folder), "--threads", str(threads)]
    command += ["--rounds", str(rounds), "--repeats", str(repeats), *(["--quick"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    if done.returncode != 0:
        sys.exit(f"timing group {group} of {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def table(rows: dict) -> list[str]:
    """rows: (model, batch, canvas) -> {path: (ms, ratio to its group's ORT fp32), "ORT fp32": ms}."""
    lines = [
        "| model | batch | canvas | ORT fp32 ms | " + " | ".join(f"{p} ×" for p in PATHS) + " |",
        "|---|---|---|---|" + "---|" * len(PATHS),
    ]
    for (model, batch, canvas), row in rows.items():
        cells = [f"**{row[p][1]:.2f}**" if p.endswith("int8") or p.endswith("sampled") else f"{row[p][1]:.2f}" for p in PATHS]
        lines.append(f"| {model} | {batch} | {canvas[0]}×{canvas[1]} | {row['ORT fp32']:.0f} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds after the settling one (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per path, case and round (default 3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--artifacts", type=Path, help="where the exported files are kept and reused (default: a temporary folder)")
    parser.add_argument("--group", choices=GROUPS, help=argparse.SUPPRESS)  # a timing process (run_group)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = ["vfnet_r18_demo"] if args.quick else list(CASES)
    cases = {name: [(1, (384, 512))] if args.quick else CASES[name] for name in names}
    if args.group:
        print(json.dumps(time_group(args.model, args.group, args.artifacts / args.model, cases[args.model], args.threads, args.rounds, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        root = args.artifacts or Path(scratch)
        rows = {}
        for name in names:
            artifacts(name, root / name)
            for group in GROUPS:
                measured = run_group(name, group, root, args.quick, args.threads, args.rounds, args.repeats)
                reference = {tuple(m["case"][:1]) + tuple(m["case"][1]): m["ms"] for m in measured if m["path"] == "ORT fp32"}
                for m in measured:
                    batch, canvas = m["case"][0], tuple(m["case"][1])
                    row = rows.setdefault((name, batch, canvas), {})
                    if m["path"] == "ORT fp32":
                        row.setdefault("ORT fp32", m["ms"])  # the first group's figure is the one shown
                    else:
                        row[m["path"]] = (m["ms"], m["ms"] / reference[(batch, *canvas)])
                print(f"{name} {group}: {measured}", file=sys.stderr, flush=True)
    import onnxruntime as ort

    lines = [
        SECTION,
        "",
        f"`python bench/cpu_fast_path.py` on {cpu_description()}, {args.threads} threads, onnxruntime {ort.__version__}, "
        f"openvino {openvino.__version__}, torch {torch.__version__}. Full contract; each figure is the ratio of a path's latency to "
        "ONNX Runtime float32's measured in the same process (groups of at most four compiled models, one discarded settling round, "
        f"then {args.rounds} alternated rounds of {args.repeats} calls; the lowest round median). `sampled` (`--sampled-star`): the star "
        "convolution as GridSample + a quantized 1x1 Conv in ONNX, as a Gather of its 25 corners + a quantized MatMul in the IR. OV int8 runs its float rest in "
        + ("bf16 (this CPU has native bfloat16)." if NATIVE_BF16 else "fp32 (this CPU has no native bfloat16; OV bf16 is left out).")
        + " Ratios below 1 are faster.",
        "",
        *table(rows),
    ]
    return publish(SECTION, lines, write=not args.quick)


if __name__ == "__main__":
    raise SystemExit(main())

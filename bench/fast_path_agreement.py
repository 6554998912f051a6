"""How closely each CPU fast path finds what ONNX Runtime float32 finds, through the runtime
(`load_detector(...).detect`, the served pre-processing and filters): ONNX Runtime float32 with the
star convolution sampled (`--sampled-star`, the same function), ONNX Runtime int8 (`vfnet export
onnx --int8`, with and without --sampled-star), OpenVINO float32, bfloat16 where the CPU has it, and
int8 (`vfnet export openvino --int8`, NNCF, with and without --sampled-star).

- vfnet_r50_fpn with random weights (seed 0, classification bias 0, so that IACS values sit near
  0.5 and each image has many detections): the network the issue names, without a checkpoint.
- The demo model with its trained weights.

Both are calibrated (int8) on 32 synthetic scenes of seed 41 and compared on scenes of seed 53.
For each image, the float32 path's best `--top` detections are each matched to the fast path's
best-overlapping detection of the same class (any score above the model's floor). Reported: the
share matched at IoU >= 0.5 (label agreement), the IoU distribution of the matches, and the
distribution of |score difference|.

    python bench/fast_path_agreement.py            # writes docs/benchmarks.md (section below)
    python bench/fast_path_agreement.py --quick    # 4 images, the demo only; not written
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import openvino
import torch
from cpu_fast_path import artifacts  # bench/cpu_fast_path.py: the exported paths, made once
from PIL import Image
from report import cpu_description, publish  # bench/report.py
from torchvision.ops import box_iou

from vfnet.model import build_vfnet, load_checkpoint
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.backends.openvino_backend import native_bf16
from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.synth import render_image

SECTION = "## CPU fast paths: detection agreement with ONNX Runtime float32"
NATIVE_BF16 = native_bf16(openvino.Core())


def jpeg(seed: int, index: int) -> bytes:
    image = render_image(np.random.default_rng([seed, index]), 384, 512, min_side=48, max_objects=6)[0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def fast_paths(name: str, model, folder: Path) -> dict[str, object]:
    """Every path of `model` (cpu_fast_path.py's artifacts, made in `folder`); name -> Detector,
    float32 ONNX Runtime first."""
    files = artifacts(name, folder / name, model)
    paths = {name: load_detector(files[name], device="cpu") for name in ("ORT fp32", "ORT fp32 sampled", "ORT int8", "ORT int8 sampled")}
    paths["OV fp32"] = load_detector(files["OV fp32"], precision="fp32")
    if NATIVE_BF16:
        paths["OV bf16"] = load_detector(files["OV bf16"], precision="bf16")
    paths |= {name: load_detector(files[name]) for name in ("OV int8", "OV int8 sampled")}  # the float rest in bf16 where native
    return paths


def agreement(reference, other, images: list[bytes], top: int) -> dict[str, float]:
    """Match `reference`'s best `top` detections per image to `other`'s (see the module docstring)."""
    overlaps, differences, missed = [], [], 0
    for data in images:
        [a], [b] = reference.detect([data]), other.detect([data])
        for box, score, label in zip(a.boxes[:top], a.scores[:top], a.labels[:top]):
            same = b.labels == label
            if not same.any():
                missed += 1
                continue
            ious = box_iou(torch.from_numpy(box[None]).double(), torch.from_numpy(b.boxes[same]).double())[0].numpy()
            best = int(ious.argmax())
            if ious[best] < 0.5:
                missed += 1
                continue
            overlaps.append(ious[best])
            differences.append(abs(float(b.scores[same][best]) - float(score)))
    overlaps, differences = np.array(overlaps), np.array(differences)
    return {
        "detections": len(overlaps) + missed,
        "matched": len(overlaps) / max(1, len(overlaps) + missed),
        "iou_p1": np.percentile(overlaps, 1),
        "iou_p5": np.percentile(overlaps, 5),
        "iou_median": np.median(overlaps),
        "iou_min": overlaps.min(),
        "score_median": np.median(differences),
        "score_p99": np.percentile(differences, 99),
        "score_max": differences.max(),
    }


def iou_text(iou: float) -> str:
    """0.8153, 1-6e-06 for an IoU too close to 1 for four decimals to show the difference, or 1."""
    return f"{iou:.4f}" if iou < 0.9999 else f"1-{1 - iou:.0e}" if iou < 1 else "1"


def table(rows: list[dict], count: int, top: int) -> list[str]:
    """The section's lines for `rows` (one per model and fast path, from `agreement`)."""
    lines = [
        SECTION,
        "",
        f"`python bench/fast_path_agreement.py` on {cpu_description()}: {count} held-out synthetic scenes (384×512 JPEG, served at the "
        f"model's input size), the float32 path's best {top} detections per image matched to each fast path's detections of the "
        "same class. " + ("" if NATIVE_BF16 else "OpenVINO bf16: not measured (this CPU has no native bfloat16)."),
        "",
        "| model | fast path | fp32 detections | matched (IoU ≥ 0.5, same label) | IoU min / p1 / p5 / median | abs(Δscore) median / p99 / max |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['path']} | {r['detections']} | {100 * r['matched']:.1f}% | "
            f"{' / '.join(iou_text(r[key]) for key in ('iou_min', 'iou_p1', 'iou_p5', 'iou_median'))} | "
            f"{r['score_median']:.2g} / {r['score_p99']:.2g} / {r['score_max']:.2g} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--top", type=int, default=20, help="float32 detections per image to match (best first)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--artifacts", type=Path, help="where the exported files are kept and reused (as bench/cpu_fast_path.py's)")
    parser.add_argument("--demo-only", action="store_true", help="leave out the random-weight vfnet_r50_fpn (whose artifacts take long to make)")
    args = parser.parse_args()
    count = 4 if args.quick else args.images
    images = [jpeg(53, i) for i in range(count)]
    torch.manual_seed(0)
    r50 = build_vfnet("vfnet_r50_fpn").eval()
    torch.nn.init.zeros_(r50.bbox_head.vfnet_cls.bias)
    models = [("vfnet_r18_demo", load_checkpoint(DEMO_CHECKPOINT).eval())] + ([] if args.quick or args.demo_only else [("vfnet_r50_fpn (random)", r50)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            folder = args.artifacts if args.artifacts and model is not r50 else Path(tmp)  # this r50 (bias 0) is not cpu_fast_path.py's
            paths = fast_paths(name.split()[0], model, folder)
            reference = paths.pop("ORT fp32")
            for path_name, detector in paths.items():
                rows.append({"model": name, "path": path_name, **agreement(reference, detector, images, args.top)})
                print(rows[-1], flush=True)
    lines = table(rows, count, args.top)
    return publish(SECTION, lines, write=not args.quick)


if __name__ == "__main__":
    raise SystemExit(main())

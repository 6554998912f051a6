"""`vfnet export onnx ...`: checkpoints to deployable graphs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50.onnx
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50_fp16.onnx --fp16     # for TensorRT 11
  vfnet export onnx --weights demo.safetensors --out demo_raw.onnx --raw                 # head outputs, for parity
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50_plugin.onnx --plugin # StarDeformConv nodes
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfnet export",
        description="Export a vfnet-serve checkpoint to a deployable graph.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="{onnx}")
    onnx = targets.add_parser(
        "onnx",
        help="one ONNX file: uint8 images in, NMS-ed detections out (standard operators, opset 19)",
        description="Export the whole inference contract (normalisation, network, decoding, class-aware NMS) "
        "to one ONNX file with dynamic batch, height and width, metadata inside, checked by onnx.checker.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    onnx.add_argument("--weights", required=True, type=Path, help="vfnet-serve checkpoint (.safetensors)")
    onnx.add_argument("--out", required=True, type=Path, help="output .onnx file")
    onnx.add_argument("--fp16", action="store_true", help="float16 network (outputs stay float32); for TensorRT 11")
    onnx.add_argument(
        "--fp16-storage", action="store_true", help="store weights as float16 where they restore exactly (about half the file; computes in float32)"
    )
    onnx.add_argument("--max-detections", type=int, metavar="N", help="detections per image K (default: the checkpoint's, 100)")
    onnx.add_argument("--raw", action="store_true", help="output the raw per-level head tensors instead of detections")
    onnx.add_argument(
        "--plugin",
        action="store_true",
        help="write each star deformable convolution as one StarDeformConv node (our TensorRT plugin, domain trt.plugins); "
        "runs on CPU with the plugin's host build (make plugins)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vfnet.model import CheckpointError, load_checkpoint

    from .onnx_export import export_onnx

    try:
        model = load_checkpoint(args.weights)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.max_detections is not None and args.max_detections < 1:
        print("error: --max-detections must be at least 1", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    summary = export_onnx(model, args.out, fp16=args.fp16, fp16_storage=args.fp16_storage, raw=args.raw, plugin=args.plugin, max_detections=args.max_detections, progress=progress)
    print(summary)
    return 0

"""`vfnet convert-mmdet SRC.pth DST.safetensors`: an official checkpoint to ours (the command line
of `vfnet.model.convert_mmdet`, kept out of the model package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vfnet.model import CheckpointError, VFNetConfig, convert_mmdet
from vfnet.model.presets import PRESETS


def _describe(config: VFNetConfig) -> str:
    return f"{config.num_classes} classes, input fit {config.input_size[0]}x{config.input_size[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet convert-mmdet",
        description="Convert an official VFNet / mmdetection checkpoint (.pth) to a vfnet-serve checkpoint "
        "(.safetensors). The file is read without executing any code in it.",
        epilog="examples:\n"
        "  vfnet convert-mmdet vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth vfnet_r50.safetensors\n"
        "  vfnet convert-mmdet my_vfnet.pth my_vfnet.safetensors --preset vfnet_r50_fpn_mdconv --fp16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", type=Path, help="official / mmdetection 2.x or 3.x checkpoint (.pth)")
    parser.add_argument("dst", type=Path, help="output checkpoint (.safetensors)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="architecture (default: detected from the keys)")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument(
        "--ema-state-dict",
        action="store_true",
        help="take the weights from the file's 'ema_state_dict' (mmengine EMAHook; 'module.' prefix stripped) instead of "
        "'state_dict'; an error if the file has none. mmengine swaps the two when saving: its 'state_dict' already holds "
        "the averaged weights, its 'ema_state_dict' the raw training ones",
    )
    args = parser.parse_args(argv)
    try:
        model = convert_mmdet(args.src, args.dst, preset=args.preset, fp16=args.fp16, ema=args.ema_state_dict)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size_mb = args.dst.stat().st_size / 1e6
    print(f"{args.src} -> {args.dst} ({size_mb:.1f} MB): preset {model.preset}, {_describe(model.config)}")
    return 0

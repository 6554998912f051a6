"""`vfnet data synth` and `vfnet train` (`vfnet eval`, which runs the runtime, is vfnet.server.evaluate)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

Formatter = argparse.RawDescriptionHelpFormatter


def data_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet data",
        description="Make detection data sets.",
        epilog="examples:\n  vfnet data synth --out data/val --images 500 --seed 2   (vfnet data synth --help for more)",
        formatter_class=Formatter,
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{synth}")
    synth = kinds.add_parser(
        "synth",
        help="a deterministic synthetic detection set in COCO format",
        description="Eight shape classes (circle, triangle, rectangle, star, ring, cross, hexagon, arrow) on "
        "cluttered, textured scenes; boxes tight around the visible part of each object. Writes "
        "OUT/annotations.json and OUT/images/*.jpg. The same seed always gives the same set.",
        epilog="examples:\n  vfnet data synth --out data/train --images 6000 --seed 1\n  vfnet data synth --out data/val --images 500 --seed 2 --size 512",
        formatter_class=Formatter,
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--images", required=True, type=int, help="number of images")
    synth.add_argument("--seed", required=True, type=int, help="random seed (use different seeds for train and val)")
    synth.add_argument("--size", type=int, default=512, help="long side of every image in pixels (default 512)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.size < 64:
        parser.error("--images must be at least 1 and --size at least 64")
    from .synth import generate

    with tqdm(total=args.images, unit="img", disable=None) as bar:
        path = generate(args.out, args.images, args.seed, args.size, progress=lambda n: bar.update(1))
    print(f"wrote {args.images} images and {path}")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    from .trainer import TrainConfig

    defaults = TrainConfig(data="", out="")
    parser = argparse.ArgumentParser(
        prog="vfnet train",
        description="Train a VFNet (ATSS assignment, Varifocal Loss, IoU-weighted GIoU) on a COCO-format set. "
        "Shows a progress bar, saves OUT/last.pt periodically and resumes from it, and writes "
        "OUT/final.safetensors (float16 storage, class names in the metadata).",
        epilog="examples:\n  vfnet train --data data/train --out runs/demo\n"
        "  vfnet train --data data/train --out runs/fl --cls-loss focal --epochs 6   # the ablation's baseline\n"
        "  vfnet train --data data/train --out runs/plain --set star_dcn=false --set input_size=[320,320]",
        formatter_class=Formatter,
    )
    parser.add_argument("--data", required=True, help="folder with annotations.json and images (or the json itself)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default=defaults.preset, help=f"model preset (default {defaults.preset})")
    parser.add_argument(
        "--set",
        dest="model_overrides",
        action="append",
        default=[],
        type=model_setting,
        metavar="FIELD=VALUE",
        help="change one VFNetConfig field of the preset, VALUE in JSON (repeatable); the ablation's variants are "
        "star_dcn=false, box_refinement=false, centerness=true",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="base learning rate (biases get 2x)")
    parser.add_argument("--lr-steps", type=int, nargs="*", default=list(defaults.lr_steps), help="epochs after which lr drops 10x")
    parser.add_argument("--warmup-iters", type=int, default=defaults.warmup_iters)
    parser.add_argument("--scale-range", type=float, nargs=2, default=list(defaults.scale_range), metavar=("MIN", "MAX"))
    parser.add_argument("--cls-loss", choices=("varifocal", "focal"), default=defaults.cls_loss)
    parser.add_argument("--max-images", type=int, default=0, help="train on the first N images only (0: all)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, help="iterations between resume files")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 1.7x faster on CPUs with AVX-512 BF16)")
    parser.add_argument(
        "--init-backbone",
        default="",
        metavar="CHECKPOINT",
        help="start the backbone from this checkpoint's (ours, .safetensors); with --set frozen_stages=4 --set norm_eval=true it stays fixed",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    args = parser.parse_args(argv)
    config = TrainConfig(
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ("lr_steps", "scale_range", "momentum", "weight_decay", "warmup_ratio", "flip", "model_overrides")
        },
        lr_steps=tuple(args.lr_steps),
        scale_range=tuple(args.scale_range),
        model_overrides=dict(args.model_overrides),
    )
    from vfnet.model import preset_config

    from .trainer import train

    try:
        preset_config(config.preset, **config.model_overrides)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))

    try:
        path = train(config, resume=not args.no_resume)
    except (FileNotFoundError, ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def model_setting(text: str) -> tuple[str, object]:
    """'star_dcn=false' -> ("star_dcn", False); JSON lists become tuples ('input_size=[320,320]')."""
    name, sep, value = text.partition("=")
    try:
        parsed = json.loads(value) if sep else None
    except json.JSONDecodeError:
        parsed = None
    if not name or parsed is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE with a JSON value, e.g. star_dcn=false or input_size=[320,320]")
    return name, tuple(parsed) if isinstance(parsed, list) else parsed

"""`vfnet predict SOURCE... --out OUT`: detections for many images and videos, on this machine or (with
--ray) on a Ray cluster. Errors in the arguments are one line and exit 2; a run exits 0 when every
input was detected, 1 when some became error records, 130 when stopped by Ctrl-C (after its batch)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from vfnet.server.runtime import ModelLoadError, load_detector
from vfnet.server.runtime.backends import BACKEND_CHOICES, DEVICES, INFERENCE_PRECISIONS
from vfnet.server.runtime.detector import DEFAULT_SCORE_THRESHOLD
from vfnet.server.runtime.images import DEFAULT_MAX_PIXELS
from vfnet.server.runtime.load import demo_model
from vfnet.server.zoo import ZooError
from vfnet.server.zoo.cli import add_zoo_flags
from vfnet.server.zoo.resolve import served_file

from .local import PredictOptions, Summary, predict
from .records import FORMATS, Journal, OutputError
from .sources import SourceError, expand_sources, is_uri

EXAMPLES = """examples:
  vfnet predict photos/ --model vfnet_r50.onnx --out dets.jsonl            # a folder, recursively
  vfnet predict 'shots/**/*.jpg' @more.txt --out dets.parquet --batch-size 8 --threads 4
  vfnet predict coco/val2017.json --model vfnet_r50_fpn_1x_coco --out results.json   # COCO results, its image ids
  vfnet predict clip.mp4 --every 5 --max-frames 1000 --out clip.jsonl --annotated drawn/
  vfnet predict photos/ --out dets.jsonl --resume                            # after a stop: only what is missing
  vfnet predict s3://bucket/photos/ --ray auto --actors 8 --gpus-per-actor 1 --out s3://bucket/dets/   # Ray Data
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vfnet predict",
        description="Detect objects in many images and video frames through the runtime (any backend), with the same "
        "decoding, batching by canvas, thresholds and class filter as /detect, and write one record per image or frame. "
        f"--out's suffix picks the format: {', '.join(f'{k} ({v})' for k, v in FORMATS.items())}.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image or video files, folders (recursive), globs, @list.txt, COCO annotation files")
    p.add_argument("--out", required=True, help="output file (.jsonl, .json COCO results, .parquet); with --ray a folder or URI")
    p.add_argument("--model", help="checkpoint, ONNX file, OpenVINO IR, TensorRT engine or zoo name (default: the bundled demo model)")
    add_zoo_flags(p)
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="auto")
    p.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD, help=f"as /detect's (default {DEFAULT_SCORE_THRESHOLD})")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU (default: the model's)")
    p.add_argument("--max-detections", type=int, help="per image (default: the model's limit)")
    p.add_argument("--classes", help="comma-separated class names or indices to keep (default: all)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"larger images become error records (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--batch-size", type=int, default=8, help="images per backend call (default 8)")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="decoding threads (default: CPU count, at most 4)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="videos: at most N frames each")
    p.add_argument("--resume", action="store_true", help="continue a stopped run: skip what --out already holds")
    p.add_argument("--annotated", type=Path, metavar="DIR", help="also write each image with its detections drawn (as /detect/annotated)")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS", help="run on a Ray cluster (default address: a local one); needs '.[ray]'")
    p.add_argument("--actors", type=int, default=2, help="with --ray: model actors (default 2)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="with --ray: GPUs per model actor (default 0)")
    p.add_argument(
        "--cpus-per-actor", type=float, help="with --ray: CPUs per model actor (default: min(1, CPUs / (actors + 1)), leaving room for the decoding tasks)"
    )
    return p


def _options(args: argparse.Namespace) -> PredictOptions:
    for name in ("batch_size", "threads", "every", "max_frames", "max_detections", "actors"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    classes = tuple(int(c) if c.isdigit() else c for c in classes) if classes else None
    return PredictOptions(
        args.score_threshold, args.iou_threshold, args.max_detections, classes, args.batch_size, args.threads, args.every, args.max_frames, args.annotated
    )


def coco_category_ids(arguments: list[str], class_count: int) -> list[int] | None:
    """The category ids (sorted, as `vfnet eval` maps them) of a COCO annotation file among the
    sources, when it has one category per class of the model; else None (results use class_id + 1)."""
    for argument in arguments:
        if argument.endswith(".json") and Path(argument).is_file():
            try:
                categories = json.loads(Path(argument).read_text()).get("categories") or []
            except (OSError, ValueError, AttributeError):
                continue
            ids = sorted(c["id"] for c in categories if isinstance(c, dict) and "id" in c)
            if len(ids) == class_count:
                return ids
    return None


def _stop_on_ctrl_c() -> threading.Event:
    """The first Ctrl-C sets the event (the run ends after its batch); a second one interrupts at once."""
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()
        print("\nstopping after the current batch (Ctrl-C again to abort) ...", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    return stop


def _report(summary: Summary, out: Path, journal: Journal) -> int:
    rate = summary.detected / summary.seconds if summary.seconds else 0.0
    print(
        f"{summary.detected} detected, {summary.failed} failed, {summary.skipped} already in {out}, in {summary.seconds:.1f} s ({rate:.1f} inputs/s)",
        file=sys.stderr,
    )
    for error in summary.errors:
        print(f"  error: {error}", file=sys.stderr)
    if summary.interrupted:
        print(f"stopped: what is in {journal.path} is complete; run the same command with --resume to finish", file=sys.stderr)
        return 130
    print(f"wrote {out}", file=sys.stderr)
    return 1 if summary.failed or journal.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = _options(args)
        sources = expand_sources(args.sources)
        if args.ray is None and args.out.lower().endswith(".json") and any(source.is_video for source in sources):
            raise ValueError("COCO results hold images, not video frames: write the videos' detections to .jsonl or .parquet")
        if args.ray is None and is_uri(args.out):
            raise ValueError(f"--out {args.out}: a local run writes a local file; write to a URI with --ray (Ray's writers)")
        if args.ray is not None and args.out.lower().endswith(".json"):
            raise ValueError("--ray writes a folder of JSON Lines or Parquet files: name --out with .jsonl, or .parquet (or no suffix) for Parquet")
    except (SourceError, ValueError) as e:
        print(f"vfnet predict: {e}", file=sys.stderr)
        return 2
    try:
        model = demo_model(args.backend) if args.model is None else served_file(args.model, args.backend, zoo_file=args.zoo, mirror=args.mirror)
        detector = load_detector(model, backend=args.backend, max_pixels=args.max_pixels, device=args.device, precision=args.precision)
        detector.check_options(options.score_threshold, options.iou_threshold, options.max_detections, options.classes)
    except (ModelLoadError, ZooError, ValueError) as e:
        print(f"vfnet predict: {e}", file=sys.stderr)
        return 1
    if args.ray is not None:
        try:
            from .ray_job import predict_on_ray
        except ImportError as e:  # pyarrow, which Ray Data brings
            print(f"vfnet predict: --ray needs Ray Data ({e.name} is missing): pip install 'vfnet-serve[ray]'", file=sys.stderr)
            return 1
        return predict_on_ray(args.ray, model, args, sources, options, card=detector.card)
    out = Path(args.out)
    try:
        journal = Journal(out, args.resume)
    except OutputError as e:
        print(f"vfnet predict: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    videos = any(source.is_video for source in sources)
    with tqdm(total=None if videos else len(sources), unit="img", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        failed = [journal.failed]

        def progress(detected: int, newly_failed: int) -> None:
            failed[0] += newly_failed
            bar.update(detected + newly_failed)
            bar.set_postfix(errors=failed[0], refresh=False)

        bar.update(len(journal.done) if not videos else 0)
        summary = predict(detector, sources, journal, options, progress=progress, stop=_stop_on_ctrl_c())
    if summary.interrupted:
        journal.close()
    else:
        try:
            journal.finish(coco_category_ids(args.sources, len(detector.card.class_names)))
        except OutputError as e:
            print(f"vfnet predict: {e}", file=sys.stderr)
            return 1
    return _report(summary, out, journal)

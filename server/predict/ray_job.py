"""`vfnet predict --ray ADDRESS`: the same records as the local run, computed by Ray Data.

    code = predict_on_ray("auto", Path("vfnet_r50.onnx"), args, sources, options)   # 0, or 1 when an input failed

The dataset, stage by stage (one row per image or video frame after the first):

    from_items        one row per source: position (1-based, in `sources`), path, coco_id
    prepare  (tasks)  read_items (an image's bytes; a video's frames, decoded with PyAV), then the runtime's
                      prepare_image (EXIF orientation, keep-ratio resize) with the card's input size and
                      divisor, all in one CPU task; the resized pixels travel as raw uint8 bytes; a file that
                      cannot be read or decoded becomes a row with its error
    detect   (actors) an ActorPoolStrategy pool, each actor holding one Detector: infer (grouped by canvas
                      there), select with the options, records.record for every row, error rows included
    write             write_json (OUT ending .jsonl or .ndjson: a folder of JSON Lines files) or write_parquet

Each row carries its source's position and COCO id from the driver, so image_id is the local run's
whichever task reads it; rows are written in no particular order (sort by (source, frame)). Every
file named by a source and the model must be readable at the same path on every node. A tally actor
counts the records as they are made, so the summary needs no second pass over the output.
Ray is imported only here, and only when `--ray` is given.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from vfnet.server.runtime import ImageError, ModelCard, PreparedImage, load_detector
from vfnet.server.runtime.images import DEFAULT_MAX_PIXELS, prepare_image

from .local import PredictOptions
from .records import is_json_lines, parquet_schema, record
from .sources import Item, Source, is_uri, read_items

INSTALL_RAY = "pip install 'vfnet-serve[ray]'"
_PREPARED = pa.schema(
    [("position", pa.int64()), ("path", pa.string()), ("coco_id", pa.int64()), ("frame", pa.int64()), ("timestamp", pa.float64()), ("error", pa.string())]
    + [("pixels", pa.large_binary()), ("height", pa.int32()), ("width", pa.int32()), ("original_height", pa.int32()), ("original_width", pa.int32())]
    + [("canvas_height", pa.int32()), ("canvas_width", pa.int32()), ("frames", pa.int32())]
)


def record_schema(json_lines: bool) -> pa.Schema:
    """records.parquet_schema(); for JSON Lines with float64 boxes and scores, so that the values
    written are exactly the local run's (0.01 px and 1e-5 are not float32 numbers)."""
    schema = parquet_schema()
    if not json_lines:
        return schema
    detection = pa.struct([("box", pa.list_(pa.float64(), 4)), ("score", pa.float64()), ("class_id", pa.int32()), ("class_name", pa.string())])
    return schema.set(schema.get_field_index("detections"), pa.field("detections", pa.list_(detection)))


def _prepared_row(row: dict, item: Item, card: ModelCard, max_pixels: int | None) -> dict:
    """One item as a _PREPARED row: prepared as local.py's Detector.prepare does, or its error with the local run's message."""
    out = {"position": row["position"], "path": row["path"], "coco_id": row["coco_id"], "frame": item.frame, "timestamp": item.timestamp, "error": item.error}
    if item.error is not None:
        return out
    try:
        prepared = prepare_image(item.data, card.input_size, card.size_divisor, max_pixels)
    except ImageError as e:
        return {**out, "error": str(e)}
    except Exception as e:  # a decoder's own failure on odd data: the input's error, not the job's
        return {**out, "error": f"cannot decode: {type(e).__name__}: {e}"}
    (height, width, _), (original_height, original_width), (canvas_height, canvas_width) = prepared.pixels.shape, prepared.original_size, prepared.canvas
    out.update(pixels=prepared.pixels.tobytes(), height=height, width=width, original_height=original_height, original_width=original_width)
    return {**out, "canvas_height": canvas_height, "canvas_width": canvas_width, "frames": prepared.frames}


def prepare_sources(batch: pa.Table, options: PredictOptions, card: ModelCard, max_pixels: int | None) -> Iterator[pa.Table]:
    """Rows of sources -> rows of prepared images (_PREPARED), `options.batch_size` rows a table, so a
    video streams through a few frames at a time and no full-resolution frame leaves the task."""
    for row in batch.to_pylist():
        rows = []
        for item in read_items(Source(row["path"], row["coco_id"]), options.every, options.max_frames):
            rows.append(_prepared_row(row, item, card, max_pixels))
            if len(rows) == options.batch_size:
                yield pa.Table.from_pylist(rows, _PREPARED)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, _PREPARED)


class _Tally:
    """Records made and how many are errors, summed over the actors (a num_cpus=0 Ray actor)."""

    def __init__(self):
        self.rows = self.errors = 0

    def add(self, rows: int, errors: int) -> None:
        self.rows, self.errors = self.rows + rows, self.errors + errors

    def totals(self) -> tuple[int, int]:
        return self.rows, self.errors


class DetectActor:
    """A Ray Data actor holding one Detector: rows of prepared images (_PREPARED) -> records (`schema`)."""

    def __init__(self, model: str, load: dict, options: PredictOptions, schema: pa.Schema, tally):
        self.detector = load_detector(model, **load)
        self.options, self.schema, self.tally = options, schema, tally

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        rows = batch.to_pylist()
        good = [row for row in rows if row["error"] is None]
        o, detector = self.options, self.detector
        results = detector.infer([_prepared(row) for row in good], o.iou_threshold) if good else []
        made = {
            id(row): record(_item(row), row["position"], detector.select(result, o.score_threshold, o.max_detections, o.classes))
            for row, result in zip(good, results)
        }
        records = [made[id(row)] if row["error"] is None else record(_item(row), row["position"], error=row["error"]) for row in rows]
        ray.get(self.tally.add.remote(len(rows), len(rows) - len(good)))  # waited for: counted before the job ends
        return pa.Table.from_pylist(records, self.schema)


def _prepared(row: dict) -> PreparedImage:
    pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)  # (h, w, 3) resized RGB
    return PreparedImage(pixels, (row["original_height"], row["original_width"]), (row["canvas_height"], row["canvas_width"]), row["frames"])


def _item(row: dict) -> Item:
    return Item(Source(row["path"], row["coco_id"]), row["frame"], row["timestamp"], None)


def cpu_share(cpus: float, actors: int) -> float:
    """CPUs each actor and each read/prepare task asks for when --cpus-per-actor is not given:
    min(1, cpus / (actors + 1)), rounded down to 0.01, so the actors never take every CPU and leave the
    tasks feeding them unscheduled (2 CPUs, 2 actors: 0.66 each). A cluster showing no CPUs yet (autoscaling) gets 1."""
    if not cpus:
        return 1.0
    return max(0.01, min(1.0, math.floor(100 * cpus / (actors + 1)) / 100))


def decode_memory(max_pixels: int | None) -> int:
    """Bytes a preparing task asks for: the peak of one decode at the pixel cap, the decoded image and its
    RGB array (3 bytes a pixel each). A request the actors do not make also keeps Ray Data from fusing
    the tasks into the actors (Ray 2.60 fuses a task stage into the next actor stage when their remote
    args are equal), so decoding stays in CPU tasks beside the actors, not inside them."""
    return 2 * 3 * (max_pixels or DEFAULT_MAX_PIXELS)


def _start(ray, address: str, num_cpus: int | None) -> bool:
    """Connect to `address` ("auto": a running local instance, else a new one); True when this call
    started or connected Ray (and so shuts it down), False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    local = address == "auto"
    extra = {"num_cpus": num_cpus, "include_dashboard": False} if local else {}
    ray.init(address=None if local else address, logging_level=logging.WARNING, log_to_driver=False, ignore_reinit_error=True, **extra)
    return True


def _one_line(error: BaseException) -> str:
    """An exception as one line: a remote failure's own cause when Ray wrapped it."""
    cause = getattr(error, "cause", None) or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text if len(text) < 400 else text[:400] + " ..."


def _read_card(model: Path, args: argparse.Namespace) -> ModelCard:
    return load_detector(model, backend=args.backend, max_pixels=args.max_pixels, device=args.device, precision=args.precision).card


def build_dataset(ray, model: Path, args: argparse.Namespace, sources: Sequence[Source], options: PredictOptions, card: ModelCard, tally):
    """The records dataset (nothing runs until it is written)."""
    cpus = ray.cluster_resources().get("CPU", 0.0)
    share = cpu_share(cpus, args.actors)
    actor_cpus = share if args.cpus_per_actor is None else args.cpus_per_actor
    if cpus and args.actors * actor_cpus + share > cpus:
        print(
            f"vfnet predict: warning: {args.actors} actors x {actor_cpus:g} CPUs leave less than {share:g} of the cluster's {cpus:g} CPUs to decode; the job waits for more",
            file=sys.stderr,
        )
    json_lines = is_json_lines(args.out)
    threads = max(1, round(actor_cpus))  # the backend's threads: the CPUs the actor asked for, not the node's
    load = {"backend": args.backend, "max_pixels": args.max_pixels, "device": args.device, "precision": args.precision, "intra_op_threads": threads}
    rows = [{"position": position, "path": source.path, "coco_id": source.image_id} for position, source in enumerate(sources, 1)]
    return (
        ray.data.from_items(rows)
        .map_batches(
            prepare_sources,
            batch_size=1,
            batch_format="pyarrow",
            fn_args=(options, card, args.max_pixels),
            num_cpus=share,
            memory=decode_memory(args.max_pixels),
        )
        .map_batches(
            DetectActor,
            batch_size=options.batch_size,
            batch_format="pyarrow",
            fn_constructor_args=(str(model), load, options, record_schema(json_lines), tally),
            compute=ray.data.ActorPoolStrategy(size=args.actors),
            num_cpus=actor_cpus,
            num_gpus=args.gpus_per_actor or None,
        )
    )


def _write(ray, dataset, out: str, cpus: float) -> None:
    """JSON Lines files for OUT ending .jsonl or .ndjson, else Parquet files, into the folder (or URI) OUT;
    an existing OUT is refused (SaveMode.ERROR), as the local run refuses to overwrite."""
    from ray.data import SaveMode

    remote = {"num_cpus": cpus}
    if is_json_lines(out):
        dataset.write_json(out, mode=SaveMode.ERROR, ray_remote_args=remote)
    else:
        dataset.write_parquet(out, mode=SaveMode.ERROR, ray_remote_args=remote, schema=parquet_schema())


def _quiet(ray) -> None:
    """No execution banners or per-operator logs; progress bars only on a terminal."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = sys.stderr.isatty()
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled ..."


def predict_on_ray(
    address: str,
    model: Path,
    args: argparse.Namespace,
    sources: Sequence[Source],
    options: PredictOptions,
    *,
    card: ModelCard | None = None,
    num_cpus: int | None = None,
) -> int:
    """Run the job on the cluster at `address` and write `args.out`; the exit code: 0, 1 when some
    input became an error record or Ray could not start or the job failed, 2 for options Ray runs lack.
    `card` spares reading the model on the driver; `num_cpus` sizes a local instance started here."""
    if options.annotated is not None or getattr(args, "resume", False):
        print(f"vfnet predict: --ray does not take {'--annotated' if options.annotated is not None else '--resume'}", file=sys.stderr)
        return 2
    try:
        import ray
        import ray.data
    except ImportError:
        print(f"vfnet predict: --ray needs Ray Data: {INSTALL_RAY}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        owned = _start(ray, address, num_cpus)
    except Exception as e:  # no such cluster, a version mismatch, no ray[client] for ray://
        print(f"vfnet predict: cannot start or reach Ray at {address}: {_one_line(e)}", file=sys.stderr)
        return 1
    try:
        _quiet(ray)
        tally = ray.remote(num_cpus=0)(_Tally).remote()
        dataset = build_dataset(ray, model, args, sources, options, card or _read_card(model, args), tally)
        out = args.out if is_uri(args.out) else os.path.abspath(args.out)  # Ray's workers do not share the driver's working directory
        _write(ray, dataset, out, cpu_share(ray.cluster_resources().get("CPU", 0.0), args.actors))
        rows, errors = ray.get(tally.totals.remote(), timeout=60)
    except Exception as e:
        print(f"vfnet predict: the Ray job failed: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        if owned:
            ray.shutdown()
    print(f"{rows} records ({errors} errors) written to {args.out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if errors else 0

"""What `vfnet predict` writes: one record per image or video frame, journalled as JSON Lines, and the
files made from the journal (COCO results, Parquet).

A record (one JSON object per line; the same fields in every format):
    source     the file, as given or found
    frame      the frame's index in a video, null for an image
    timestamp  seconds from the video's start, null for an image
    image_id   the id in a COCO annotation file given as a source, else the source's 1-based position
               among the expanded sources (a video's frames share their video's)
    width, height   of the image or frame (null when it could not be read)
    detections [{box [x1, y1, x2, y2] in original pixels, score (IACS), class_id, class_name}], best first,
               exactly as /detect answers for the same bytes
    error      why the input could not be detected (one line), else null

The journal is the output itself for `.jsonl`, and `OUT.partial.jsonl` for `.json` (COCO results) and
`.parquet`, converted when the run completes. Each batch's records are written with one write and
flushed, so a killed run loses at most the batch in flight and a resumed run (`Journal.done`) drops a
torn last line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vfnet.server.runtime import DetectionResult

from .sources import Item

FORMATS = {".jsonl": "JSON Lines", ".ndjson": "JSON Lines", ".json": "COCO results", ".parquet": "Parquet"}


class OutputError(ValueError):
    """An output that cannot be written or continued; the message names it."""


def record(item: Item, image_id: int, result: DetectionResult | None = None, error: str | None = None) -> dict:
    """The record of one input: its detections, or the error that stopped it."""
    return {
        "source": item.source.path,
        "frame": item.frame,
        "timestamp": item.timestamp,
        "image_id": image_id if item.source.image_id is None else item.source.image_id,
        "width": None if result is None else result.width,
        "height": None if result is None else result.height,
        "detections": [] if result is None else result.as_json(),
        "error": error,
    }


def output_format(out: Path) -> str:
    """The format named by `out`'s suffix; an OutputError lists the known ones."""
    if out.suffix.lower() not in FORMATS:
        known = ", ".join(f"{suffix} ({name})" for suffix, name in FORMATS.items())
        raise OutputError(f"--out {out}: unknown output format {out.suffix!r}; name the file with one of {known}")
    return FORMATS[out.suffix.lower()]


def is_json_lines(out: str | Path) -> bool:
    """Whether `out` (a path or URI) names JSON Lines (.jsonl, .ndjson)."""
    return FORMATS.get(Path(str(out)).suffix.lower()) == "JSON Lines"


def journal_path(out: Path) -> Path:
    """Where the records go while the run lasts: `out` itself for JSON Lines, else OUT.partial.jsonl."""
    return out if output_format(out) == "JSON Lines" else out.with_name(out.name + ".partial.jsonl")


class Journal:
    """The records written so far, appended one batch at a time (one write, then a flush).

    `Journal(out, resume)`: without resume an existing output or journal is refused (nothing is
    overwritten); with it, a torn last line is cut off and `done` holds the (source, frame) keys
    already recorded and `failed` how many of them are errors."""

    def __init__(self, out: Path, resume: bool):
        self.out, self.path = out, journal_path(out)
        self.done: set[tuple[str, int | None]] = set()
        self.failed = 0
        existing = [p for p in dict.fromkeys((self.out, self.path)) if p.exists()]
        if existing and not resume:
            raise OutputError(f"{existing[0]} exists; pass --resume to continue that run, or choose another --out")
        if resume and self.out != self.path and self.out.exists() and not self.path.exists():
            raise OutputError(f"{self.out} is complete (its run finished); choose another --out to run again")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._read_back()
            self.file = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None

    def _read_back(self) -> None:
        """Keys of the whole lines already in the journal; a torn last line is removed."""
        with self.path.open("rb+") as f:
            data = f.read()
            whole = data.rfind(b"\n") + 1
            if whole < len(data):
                f.truncate(whole)
        for number, line in enumerate(data[:whole].splitlines(), 1):
            try:
                kept = json.loads(line)
                self.done.add((kept["source"], kept["frame"]))
            except (ValueError, KeyError, TypeError):
                raise OutputError(f"{self.path} line {number} is not a vfnet predict record; cannot resume from it") from None
            self.failed += kept.get("error") is not None

    def write(self, records: Sequence[dict]) -> None:
        if records:
            self.file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
            self.file.flush()

    def records(self) -> Iterable[dict]:
        """Every record written, in order (read back from the file)."""
        if not self.file.closed:
            self.file.flush()
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def close(self) -> None:
        self.file.close()

    def finish(self, category_ids: Sequence[int] | None = None) -> Path:
        """Close the journal and make the output: nothing more for JSON Lines; COCO results or Parquet
        written to a temporary file, renamed to `out`, and the journal removed. An OutputError (a full
        disk, say) leaves the journal whole, so the same command with --resume makes the output again."""
        self.file.close()
        kind = output_format(self.out)
        if kind == "JSON Lines":
            return self.out
        temporary = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        try:
            if kind == "COCO results":
                write_coco_results(self.records(), temporary, category_ids)
            else:
                write_parquet(self.records(), temporary)
            os.replace(temporary, self.out)
        except OSError as e:
            raise OutputError(f"cannot write {self.out}: {e.strerror or e}; the records are kept in {self.path} (run again with --resume)") from None
        finally:
            temporary.unlink(missing_ok=True)
        self.path.unlink()
        return self.out


def coco_results(records: Iterable[dict], category_ids: Sequence[int] | None = None) -> list[dict]:
    """COCO detection results: image_id, category_id (the annotation file's id of the class when a COCO
    file was the source, else class_id + 1), bbox [x, y, width, height], score."""
    results = []
    for r in records:
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            category = category_ids[d["class_id"]] if category_ids else d["class_id"] + 1
            results.append({"image_id": r["image_id"], "category_id": category, "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)], "score": d["score"]})
    return results


def write_coco_results(records: Iterable[dict], path: Path, category_ids: Sequence[int] | None = None) -> None:
    path.write_text(json.dumps(coco_results(records, category_ids)), encoding="utf-8")


def parquet_schema():
    import pyarrow as pa

    detection = pa.struct([("box", pa.list_(pa.float32(), 4)), ("score", pa.float32()), ("class_id", pa.int32()), ("class_name", pa.string())])
    return pa.schema(
        [
            ("source", pa.string()),
            ("frame", pa.int64()),
            ("timestamp", pa.float64()),
            ("image_id", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("detections", pa.list_(detection)),
            ("error", pa.string()),
        ]
    )


def write_parquet(records: Iterable[dict], path: Path, rows_per_group: int = 10_000) -> None:
    """The records as one Parquet file, written in row groups (never all records in memory)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise OutputError("Parquet output needs pyarrow: pip install 'vfnet-serve[predict]' (or write .jsonl)") from None
    schema = parquet_schema()
    with pq.ParquetWriter(path, schema) as writer:
        chunk: list[dict] = []
        for r in records:
            chunk.append(r)
            if len(chunk) == rows_per_group:
                writer.write_table(pa.Table.from_pylist(chunk, schema))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema))

"""COCO evaluation of what is served: detections come from `vfnet.server.runtime` (any backend).

Metrics are pycocotools' bbox COCOeval: AP (IoU .50:.95), AP50, AP75, APs, APm, APl, AR1, AR10, AR100.
With `oracle=True` every detection's score is replaced by its IoU with the best-matching ground truth
of its predicted class (0 when there is none) before ranking: how good AP would be if the score
ranked boxes by localisation quality perfectly (the VFNet paper's motivating experiment; here applied
to the detections the model kept after its own NMS).

Needs no torch: `vfnet eval` runs in an ONNX Runtime install (`pip install 'vfnet-serve[cpu]'`).
The data is read by vfnet.server.coco, as training reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from vfnet.server.coco import CocoDetection
from vfnet.server.runtime import DetectionResult, Detector, ModelLoadError, load_detector
from vfnet.server.runtime.backends import BACKEND_CHOICES, INFERENCE_PRECISIONS
from vfnet.server.runtime.load import demo_model
from vfnet.server.zoo.cli import add_zoo_flags
from vfnet.server.zoo.resolve import served_file

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _oracle_scores(result: DetectionResult, gt_boxes: np.ndarray, gt_labels: np.ndarray) -> np.ndarray:
    """Each detection's IoU with the best ground truth of its predicted class (0 if none)."""
    if len(result) == 0 or len(gt_boxes) == 0:
        return np.zeros(len(result), dtype=np.float32)
    ious = coco_mask.iou(_xywh(result.boxes), _xywh(gt_boxes), [0] * len(gt_boxes))  # [N, G], COCOeval's box IoU
    same_class = result.labels[:, None] == gt_labels[None, :]
    return np.where(same_class, ious, 0.0).max(axis=1).astype(np.float32)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] xyxy -> [N, 4] float64 xywh (COCO's box format)."""
    boxes = boxes.astype(np.float64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def run_detector(detector: Detector, dataset: CocoDetection, batch_size: int = 4, progress=None) -> list[tuple[int, DetectionResult]]:
    """(image id, all of the model's detections) for every image of the set, in batches."""
    if len(detector.card.class_names) != len(dataset.category_ids):
        raise ValueError(f"the model has {len(detector.card.class_names)} classes, the data {len(dataset.category_ids)} categories")
    results = []
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        images = [detector.prepare(dataset.image_bytes(i)) for i in indices]
        results += [(dataset.images[i]["id"], r) for i, r in zip(indices, detector.infer(images))]
        if progress is not None:
            progress(len(indices))
    return results


def as_coco_results(results: list[tuple[int, DetectionResult]], dataset: CocoDetection, oracle: bool = False) -> list[dict]:
    """COCO results format ([x, y, w, h] boxes, dataset category ids); `oracle` re-scores by IoU."""
    coco = []
    for image_id, result in results:
        scores = _oracle_scores(result, *dataset.targets(image_id)) if oracle else result.scores
        for box, score, label in zip(result.boxes, scores, result.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            coco.append({"image_id": image_id, "category_id": dataset.category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return coco


def coco_metrics(annotations: Path, detections: list[dict]) -> dict[str, float]:
    """pycocotools bbox evaluation (its printed tables are silenced) -> {metric: value or None}."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        if not detections:
            return {name: 0.0 for name in METRICS}
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where the data has no ground truth (e.g. no large objects): None here
    return {name: round(float(value), 4) if value >= 0 else None for name, value in zip(METRICS, evaluator.stats)}


def evaluate(
    detector: Detector, data: str | Path, batch_size: int = 4, oracle: bool = False, results_out: str | Path | None = None, progress=None
) -> dict[str, float]:
    dataset = CocoDetection(data)
    detections = as_coco_results(run_detector(detector, dataset, batch_size, progress), dataset, oracle)
    if results_out is not None:
        Path(results_out).write_text(json.dumps(detections))
    return coco_metrics(dataset.annotations, detections)


def main(argv: list[str] | None = None) -> int:
    """`vfnet eval`: one JSON object of metrics on stdout; errors as one line and exit 1."""
    parser = argparse.ArgumentParser(
        prog="vfnet eval",
        description="COCO bbox metrics (pycocotools) of a model on a COCO-format set, computed on what the "
        "runtime serves (any backend). Prints one JSON object.",
        epilog="examples:\n  vfnet eval --data data/val                       # the bundled demo model\n"
        "  vfnet eval --model demo.onnx --data data/val --results dets.json\n"
        "  vfnet eval --model vfnet_r50_fpn_1x_coco --data coco/val2017    # a zoo name: pulled and exported once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        help="checkpoint, ONNX file, OpenVINO IR or a zoo model name (pulled and exported on first use; "
        "default: the bundled demo model, ONNX unless --backend torch)",
    )
    add_zoo_flags(parser)
    parser.add_argument("--data", required=True, help="folder with annotations.json and images")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        default="auto",
        help="with an OpenVINO IR: fp32 or bf16 (auto: bf16 where the CPU has it); tf32: a float32 model on CUDA may use TF32",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--results", type=Path, help="also write the detections in COCO results format")
    parser.add_argument("--oracle", action="store_true", help="score each detection by its IoU with the best ground truth of its class")
    args = parser.parse_args(argv)
    try:
        model = demo_model(args.backend) if args.model is None else served_file(args.model, args.backend, zoo_file=args.zoo, mirror=args.mirror)
        detector = load_detector(model, backend=args.backend, precision=args.precision, max_pixels=None)
        with tqdm(unit="img", disable=None, file=sys.stderr) as bar:
            metrics = evaluate(detector, args.data, args.batch_size, args.oracle, args.results, progress=bar.update)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(metrics))
    return 0

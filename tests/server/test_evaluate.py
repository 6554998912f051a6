"""COCO evaluation: perfect detections score 1, the oracle re-scores by IoU, the CLI runs the runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vfnet.server.coco import CocoDetection
from vfnet.server.evaluate import METRICS, _oracle_scores, coco_metrics
from vfnet.server.runtime import DetectionResult
from vfnet.train.synth import generate


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth") / "val", images=4, seed=11, size=160).parent


def ground_truth_as_detections(folder) -> list[dict]:
    coco = json.loads((folder / "annotations.json").read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in coco["annotations"]]


def test_perfect_detections_score_one(small_set):
    metrics = coco_metrics(small_set / "annotations.json", ground_truth_as_detections(small_set))
    assert set(metrics) == set(METRICS)
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == 1.0


def test_shifted_boxes_lose_ap(small_set):
    shifted = ground_truth_as_detections(small_set)
    for d in shifted:
        x, y, w, h = d["bbox"]
        d["bbox"] = [x + 0.4 * w, y, w, h]  # IoU 0.43: wrong at every threshold from 0.5
    assert coco_metrics(small_set / "annotations.json", shifted)["AP"] == 0.0


def test_oracle_scores_are_ious_with_the_same_class():
    result = DetectionResult(
        boxes=np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
        scores=np.array([0.9, 0.8, 0.7], np.float32),
        labels=np.array([0, 1, 0]),
        class_names=["a", "b", "a"],
        width=100,
        height=100,
    )
    gt_boxes = np.array([[0, 0, 10, 20], [50, 50, 60, 60]], np.float32)
    np.testing.assert_allclose(_oracle_scores(result, gt_boxes, np.array([0, 0])), [0.5, 0.0, 1.0])


def test_dataset_maps_category_ids_to_contiguous_labels(tmp_path):
    coco = {
        "images": [{"id": 5, "file_name": "x.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1},  # crowd: dropped
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 7, "name": "train"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    data = CocoDetection(tmp_path)
    assert data.class_names == ["train", "toothbrush"] and data.category_ids == [7, 90]
    boxes, labels = data.targets(5)
    assert boxes.tolist() == [[1, 2, 4, 6]] and labels.tolist() == [1]


def test_eval_cli_runs_the_served_path(small_set, tiny_onnx):
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "eval", "--model", str(tiny_onnx), "--data", str(small_set)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert set(metrics) == set(METRICS) and all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["AP"] is not None


def test_eval_cli_clear_error_for_a_missing_model(small_set, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "eval", "--model", str(tmp_path / "nope.onnx"), "--data", str(small_set)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no such file" in done.stderr and "Traceback" not in done.stderr

"""The label-free localisation-quality metrics (quality.py): what is recorded for fake detections,
that a request's own filters do not change it, and, with the bundled demo model behind a real
`vfnet serve`, that images it localises worse (blurred, cut at the border) move the top-score
histogram down. Plus the alert rule and dashboard panels that read these metrics."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from vfnet.server.app.metrics import Metrics
from vfnet.server.app.quality import COUNT_BUCKETS, TOP_SCORE_BUCKETS, QualityMetrics, class_summary
from vfnet.server.app.service import DetectOptions, Service
from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import DetectionResult, Detector
from vfnet.train.synth import render_image

from .conftest import ControlledBackend, Server, encode, png

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "docker" / "monitoring"
SCENES = 16  # per phase; the demo takes ~0.1 s an image on a CPU core
BLUR_RADIUS = 6
# Measured on these 16 scenes (seed 2031) with the demo ONNX, from the histograms (mean = _sum/_count;
# median interpolated in the buckets as histogram_quantile does): clean 0.719 / 0.863, blurred 0.626
# / 0.600, cut 0.632 / 0.650. The test asks for about half of the smaller drops.
MEAN_DROP, MEDIAN_DROP = 0.05, 0.1


def result(scores, names, classes=("cat", "dog")) -> DetectionResult:
    """A fake image's detections (best first); boxes are irrelevant here."""
    n = len(scores)
    return DetectionResult(
        boxes=np.zeros((n, 4), np.float32),
        scores=np.array(scores, np.float32),
        labels=np.array([classes.index(c) for c in names], np.int64),
        class_names=list(names),
        width=10,
        height=10,
    )


def test_class_summary_takes_the_best_score_and_counts_strictly_above_the_threshold():
    r = result([0.9, 0.8, 0.5, 0.3, 0.2], ["cat", "dog", "cat", "cat", "dog"])
    assert class_summary(r, 0.3) == {"cat": (pytest.approx(0.9), 2), "dog": (pytest.approx(0.8), 1)}
    assert class_summary(r, 0.85) == {"cat": (pytest.approx(0.9), 1)}
    assert class_summary(result([], []), 0.3) == {}


def test_record_observes_each_image_per_class_and_counts_only_when_asked():
    registry = CollectorRegistry()
    quality = QualityMetrics.register(registry)
    images = [result([0.9, 0.8, 0.5], ["cat", "dog", "cat"]), result([0.62, 0.1], ["cat", "dog"]), result([], [])]
    quality.record(images, 0.3)
    quality.record([result([0.97], ["dog"])], 0.3, counts=False)  # e.g. NMS at a request's own IoU threshold

    def value(name, class_name, **labels):
        return registry.get_sample_value(name, {"class_name": class_name, **labels})

    assert value("vfnet_top_score_count", "cat") == 2 and value("vfnet_top_score_sum", "cat") == pytest.approx(0.9 + 0.62)
    assert value("vfnet_top_score_count", "dog") == 2 and value("vfnet_top_score_sum", "dog") == pytest.approx(0.8 + 0.97)
    assert value("vfnet_top_score_bucket", "cat", le="0.6") == 0 and value("vfnet_top_score_bucket", "cat", le="0.65") == 1
    assert value("vfnet_detections_per_image_count", "cat") == 2 and value("vfnet_detections_per_image_sum", "cat") == 3
    assert value("vfnet_detections_per_image_count", "dog") == 1  # the counts=False image is left out
    assert value("vfnet_detections_per_image_bucket", "cat", le="1.0") == 1 and value("vfnet_detections_per_image_bucket", "cat", le="2.0") == 2


def test_what_a_request_asks_does_not_change_what_is_recorded():
    """ControlledBackend: a cat at 0.9 and a dog at 0.6 in every image. Requests with their own
    score threshold, class filter and detection limit record what a plain request does; one with its
    own NMS IoU threshold records top scores but no counts."""
    metrics = Metrics()

    async def scenario():
        service = Service(Detector(ControlledBackend()), ServeSettings(_env_file=None), metrics)
        await service.start()
        for options in (DetectOptions(), DetectOptions(score_threshold=0.95, classes=("dog",), max_detections=1), DetectOptions(iou_threshold=0.3)):
            await service.run_detection([png(), png()], options, "q", time.perf_counter(), asyncio.Event().wait)
        await service.stop()

    asyncio.run(scenario())
    value = metrics.registry.get_sample_value
    for name, score in (("cat", 0.9), ("dog", 0.6)):
        assert value("vfnet_top_score_count", {"class_name": name}) == 6
        assert value("vfnet_top_score_sum", {"class_name": name}) == pytest.approx(6 * score)
        assert value("vfnet_detections_per_image_count", {"class_name": name}) == 4 and value("vfnet_detections_per_image_sum", {"class_name": name}) == 4


# --- the demo model behind a real server ----------------------------------------------------------


def scenes() -> list[tuple[np.ndarray, list]]:
    """Held-out scenes with 2-4 whole, non-overlapping objects of at least 64 px."""
    return [render_image(np.random.default_rng([2031, i]), 384, 512, min_side=64, max_objects=4, min_visible=1.0) for i in range(SCENES)]


def blurred(image: np.ndarray, objects) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))


def cut(image: np.ndarray, objects) -> np.ndarray:
    """The image cut through the middle of its first object, keeping the larger side."""
    x1, _, x2, _ = objects[0].box
    middle = (x1 + x2) // 2
    return np.ascontiguousarray(image[:, middle:] if middle < image.shape[1] // 2 else image[:, :middle])


def histograms(text: str) -> dict[str, dict[str, dict]]:
    """/metrics text -> {metric: {class_name: {"buckets": {le: cumulative count}, "sum", "count"}}}
    for the two quality histograms."""
    found: dict[str, dict[str, dict]] = {"vfnet_top_score": {}, "vfnet_detections_per_image": {}}
    for family in text_string_to_metric_families(text):
        if family.name not in found:
            continue
        for sample in family.samples:
            entry = found[family.name].setdefault(sample.labels["class_name"], {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                entry["buckets"][sample.labels["le"]] = sample.value
            elif sample.name.endswith("_sum") or sample.name.endswith("_count"):
                entry[sample.name.rsplit("_", 1)[1]] = sample.value
    return found


def pooled_delta(before: dict, after: dict) -> dict:
    """One metric's growth between two snapshots, summed over classes: buckets, sum, count."""
    total = {"buckets": Counter(), "sum": 0.0, "count": 0.0}
    for name, entry in after.items():
        old = before.get(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        total["buckets"].update({le: v - old["buckets"].get(le, 0.0) for le, v in entry["buckets"].items()})
        total["sum"] += entry["sum"] - old["sum"]
        total["count"] += entry["count"] - old["count"]
    return total


def quantile(q: float, buckets: dict[str, float]) -> float:
    """Prometheus's histogram_quantile over cumulative buckets (linear within a bucket, 0 below the first)."""
    bounds = sorted((float(le), count) for le, count in buckets.items())
    rank, lower, below = q * bounds[-1][1], 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            return upper if math.isinf(upper) else lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return math.nan


@pytest.fixture(scope="module")
def demo():
    srv = Server(None, max_batch_size=4, max_queue_wait_ms=60_000).wait_ready()  # the bundled demo ONNX
    yield srv
    srv.stop()


def detect(server: Server, images: list[np.ndarray]) -> list[list[dict]]:
    """Each image's detections from /detect (default options), four images to a request."""
    detections = []
    for start in range(0, len(images), 4):
        files = [("image", (f"{i}.png", encode(image, "PNG"), "image/png")) for i, image in enumerate(images[start : start + 4])]
        response = httpx.post(f"{server.url}/detect", files=files, timeout=120)
        assert response.status_code == 200, response.text
        detections += [r["detections"] for r in response.json()["results"]]
    return detections


def metrics_of(server: Server) -> dict[str, dict[str, dict]]:
    return histograms(httpx.get(f"{server.url}/metrics").text)


def test_blurred_and_cut_images_move_the_top_score_histogram_down(demo):
    class_names = httpx.get(f"{demo.url}/v1/model").json()["class_names"]
    phases = {"clean": lambda image, objects: image, "blurred": blurred, "cut": cut}
    shown, report = {}, []
    before = metrics_of(demo)
    for phase, change in phases.items():
        answers = detect(demo, [change(image, objects) for image, objects in scenes()])
        after = metrics_of(demo)
        top = pooled_delta(before["vfnet_top_score"], after["vfnet_top_score"])
        # each image's best score per class and its count, as /detect answered them at the default threshold
        best = [max(d["score"] for d in dets if d["class_name"] == c) for dets in answers for c in {d["class_name"] for d in dets}]
        per_class = Counter(c for dets in answers for c in {d["class_name"] for d in dets})  # images with the class
        counts = Counter(d["class_name"] for dets in answers for d in dets)  # its detections
        assert top["count"] == len(best) and top["sum"] == pytest.approx(sum(best), abs=1e-4 * len(best))
        for name, entry in after["vfnet_detections_per_image"].items():
            old = before["vfnet_detections_per_image"].get(name, {"count": 0.0, "sum": 0.0})
            assert (entry["count"] - old["count"], entry["sum"] - old["sum"]) == (per_class[name], counts[name]), (phase, name)
        assert set(after["vfnet_top_score"]) <= set(class_names) and set(per_class) <= set(after["vfnet_top_score"])
        shown[phase] = (top["sum"] / top["count"], quantile(0.5, top["buckets"]))
        report.append(f"{phase}: {int(top['count'])} class observations, mean {shown[phase][0]:.3f}, bucketed median {shown[phase][1]:.3f}")
        before = after
    print("\n".join(report))
    for phase in ("blurred", "cut"):
        assert shown["clean"][0] - shown[phase][0] > MEAN_DROP, report
        assert shown["clean"][1] - shown[phase][1] > MEDIAN_DROP, report


def test_buckets_are_the_iou_steps_and_counts_per_image_match_detect(demo):
    before = metrics_of(demo)["vfnet_detections_per_image"]
    answers = detect(demo, [image for image, _ in scenes()[:4]])
    text = httpx.get(f"{demo.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    les: dict[str, list[str]] = {}
    for sample in families["vfnet_top_score"].samples:
        if sample.name.endswith("_bucket"):
            les.setdefault(sample.labels["class_name"], []).append(sample.labels["le"])
    steps = ["0.3", "0.35", "0.4", "0.45", "0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95", "1.0", "+Inf"]
    assert les and all(found == steps for found in les.values()), les
    assert TOP_SCORE_BUCKETS == tuple(float(le) for le in steps[:-1])
    # per class, each image's count lands in the bucket its /detect answer says
    after = histograms(text)["vfnet_detections_per_image"]
    expected: dict[str, Counter] = {}
    for dets in answers:
        for name, n in Counter(d["class_name"] for d in dets).items():
            expected.setdefault(name, Counter()).update(le for le in [*COUNT_BUCKETS, math.inf] if n <= le)
    assert expected and set(after) >= set(expected)
    for name, entry in after.items():
        old = before.get(name, {"buckets": {}})["buckets"]
        grown = {float(le): v - old.get(le, 0.0) for le, v in entry["buckets"].items()}
        assert grown == {float(le): expected.get(name, Counter())[float(le)] for le in [*COUNT_BUCKETS, math.inf]}, name


def test_the_model_route_says_what_the_score_means(demo):
    model = httpx.get(f"{demo.url}/v1/model").json()
    assert model["score"] == "iacs" and model["score_meaning"].startswith("IACS") and "IoU of the box" in model["score_meaning"]
    assert "vfnet_top_score{class_name}" in model["quality_metrics"] and "vfnet_detections_per_image{class_name}" in model["quality_metrics"]


# --- the alert rule and the dashboard --------------------------------------------------------------


def exported() -> set[str]:
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}
    return {f.name + s for f in Metrics().registry.collect() for s in suffixes[f.type]}


def test_the_alert_compares_a_days_median_top_score_with_the_week_before():
    rules = yaml.safe_load((MONITORING / "rules" / "vfnet-quality.yml").read_text())
    [group] = rules["groups"]
    [rule] = group["rules"]
    expr = " ".join(rule["expr"].split())
    assert rule["alert"] == "VfnetTopScoreDropped" and rule["labels"]["severity"] == "warning"
    assert set(re.findall(r"vfnet_[a-z_]+", expr)) == {"vfnet_top_score_bucket", "vfnet_top_score_count"} <= exported()
    assert expr.count("histogram_quantile(0.5, sum by (job, class_name, le) (rate(vfnet_top_score_bucket[1d]") == 2
    assert expr.count("offset 7d") == 2 and ") > 0.05 and on (job, class_name)" in expr
    assert "{{ $labels.class_name }}" in rule["annotations"]["summary"]


def test_the_dashboard_shows_median_and_p10_top_scores_and_detections_per_image():
    panels = json.loads((MONITORING / "grafana" / "dashboards" / "vfnet.json").read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert "histogram_quantile(0.5, sum by (class_name, le) (rate(vfnet_top_score_bucket[1h])))" in exprs
    assert "histogram_quantile(0.1, sum by (class_name, le) (rate(vfnet_top_score_bucket[1h])))" in exprs
    assert any("vfnet_detections_per_image_sum" in e and "vfnet_detections_per_image_count" in e for e in exprs)
    assert {name for e in exprs for name in re.findall(r"vfnet_[a-z_]+", e)} <= exported()
    assert len({p["id"] for p in panels}) == len(panels)

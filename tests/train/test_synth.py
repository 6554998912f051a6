"""The synthetic data generator: deterministic per seed, tight boxes, real variety."""

from __future__ import annotations

import json

import numpy as np

from vfnet.train.synth import CLASSES, generate, render_image


def test_deterministic_per_seed(tmp_path):
    a = generate(tmp_path / "a", images=3, seed=7)
    b = generate(tmp_path / "b", images=3, seed=7)
    c = generate(tmp_path / "c", images=3, seed=8)
    assert a.read_text() == b.read_text() != c.read_text()
    for name in ("000000.jpg", "000002.jpg"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    coco = json.loads(a.read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASSES) and len(CLASSES) >= 8
    assert {im["file_name"] for im in coco["images"]} == {f"images/{i:06d}.jpg" for i in range(3)}


def test_boxes_are_tight_around_the_visible_pixels():
    for index in range(10):
        rng = np.random.default_rng([3, index])
        image, objects = render_image(rng, 200, 300)
        assert image.shape == (200, 300, 3) and image.dtype == np.uint8
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            rows, cols = obj.visible.any(axis=1), obj.visible.any(axis=0)
            assert rows[y1] and rows[y2 - 1] and cols[x1] and cols[x2 - 1]  # visible pixels on all four edges
            assert not rows[:y1].any() and not rows[y2:].any() and not cols[:x1].any() and not cols[x2:].any()
            assert 0 <= obj.label < len(CLASSES)
        for i, a in enumerate(objects):  # visible masks never overlap: each pixel shows one object
            for b in objects[i + 1 :]:
                assert not (a.visible & b.visible).any()


def test_variety_of_sizes_classes_and_counts():
    sides, labels, counts = [], set(), []
    for index in range(40):
        _, objects = render_image(np.random.default_rng([4, index]), 384, 512)
        counts.append(len(objects))
        for obj in objects:
            sides.append(max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]))
            labels.add(obj.label)
    assert min(sides) <= 20 and max(sides) >= 250  # from about 12 px to most of the image
    assert labels == set(range(len(CLASSES)))
    assert min(counts) >= 1 and max(counts) >= 6 and np.mean(counts) >= 3

"""A deterministic synthetic detection set in COCO format: eight shape classes on cluttered scenes.

Each image: a textured background (smooth noise, gradients, stripes) with distractors (random
irregular blobs, lines and arcs that belong to no class), then 2-8 objects drawn one over another.
Objects vary in size (about 12 px to most of the image), aspect ratio, rotation, colour and fill
texture (solid, stripes, checker, gradient, noise). Later objects may hide part of earlier ones, but
every labelled object keeps at least half of its area visible, and its box is the tight box of its
*visible* pixels. Image i of seed s depends only on (s, i): any subset can be regenerated alike.

    vfnet data synth --out data/synth_train --images 6000 --seed 1
    -> data/synth_train/annotations.json (COCO) + data/synth_train/images/000000.jpg ...
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "triangle", "rectangle", "star", "ring", "cross", "hexagon", "arrow")
MIN_SIDE = 12  # smallest object extent in pixels
MIN_VISIBLE = 0.5  # an object must keep this share of its area visible


def _regular(n: int, start: float = math.pi / 2) -> np.ndarray:
    angles = start + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def shape_outline(kind: str) -> tuple[np.ndarray, float]:
    """Canonical outline in [-1, 1]^2 (polygon vertices, x right / y down) and the relative radius of
    a hole (the ring's), 0 for none."""
    if kind in ("circle", "ring"):
        return _regular(48), (0.55 if kind == "ring" else 0.0)
    if kind == "triangle":
        return _regular(3) * np.array([1.0, 1.15]) + np.array([0.0, 0.15]), 0.0
    if kind == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float), 0.0
    if kind == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return _regular(10) * radii[:, None], 0.0
    if kind == "hexagon":
        return _regular(6, start=0.0), 0.0
    if kind == "cross":
        a = 0.33
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]]), 0.0
    if kind == "arrow":
        return np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]]), 0.0
    raise ValueError(f"unknown shape {kind!r}")


def _polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=255)
    return np.asarray(canvas) > 0


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An HxWx3 float texture: solid, stripes, checker, gradient or noise, in two random colours."""
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(0, 5)
    if kind == 0:
        t = np.zeros((height, width), np.float32)
    elif kind == 1:
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
        t = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == 2:
        period = rng.uniform(4, 20)
        t = ((xx // period + yy // period) % 2).astype(np.float32)
    elif kind == 3:
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    else:
        t = _smooth_noise(rng, height, width, int(rng.integers(4, 16)))
    return a * (1 - t[..., None]) + b * t[..., None]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = _texture(rng, height, width)
    shade = _smooth_noise(rng, height, width, int(rng.integers(2, 6)))[..., None]
    image = base * (0.6 + 0.8 * shade)
    draw_canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(draw_canvas)
    for _ in range(int(rng.integers(3, 12))):  # distractors: lines, arcs, irregular blobs
        colour = tuple(int(v) for v in _colour(rng))
        kind = rng.integers(0, 3)
        if kind == 0:
            x0, y0, x1, y1 = rng.uniform(0, [width, height, width, height])
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 5)))
        elif kind == 1:
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8, min(width, height) / 2)
            start = rng.uniform(0, 360)
            draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(30, 200), fill=colour, width=int(rng.integers(1, 4)))
        else:
            n = int(rng.integers(5, 10))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(0.3, 1.0, n) * rng.uniform(6, min(width, height) / 4)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            points = [(cx + r * math.cos(t), cy + r * math.sin(t)) for r, t in zip(radii, angles)]
            draw.polygon(points, fill=colour)
    return np.asarray(draw_canvas, dtype=np.float32)


@dataclass(frozen=True)
class SynthObject:
    label: int  # index into CLASSES
    box: tuple[int, int, int, int]  # tight xyxy of the visible pixels; pixel (r, c) covers [c, c+1) x [r, r+1)
    visible: np.ndarray  # HxW bool mask of the visible pixels


def _place(rng: np.random.Generator, kind: str, height: int, width: int, min_side: float) -> np.ndarray:
    """A full object mask at a random size, aspect ratio, rotation and position."""
    outline, hole = shape_outline(kind)
    side = math.exp(rng.uniform(math.log(min_side), math.log(0.85 * min(height, width))))
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    scale = np.array([side / 2 * math.sqrt(aspect), side / 2 / math.sqrt(aspect)])
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = rng.uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height])
    mask = _polygon_mask(outline * scale @ rotation.T + centre, (width, height))
    if hole:
        mask &= ~_polygon_mask(outline * hole * scale @ rotation.T + centre, (width, height))
    return mask


def render_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    min_side: float = MIN_SIDE,
    max_objects: int = 8,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, list[SynthObject]]:
    """One scene: HxWx3 uint8 RGB and its objects (each keeps at least `min_visible` of its area
    visible; 1.0 means objects never overlap)."""
    image = _background(rng, height, width)
    placed: list[tuple[int, np.ndarray, int]] = []  # (label, visible mask, full area), drawing order
    for _ in range(int(rng.integers(2, max_objects + 1))):
        label = int(rng.integers(0, len(CLASSES)))
        for _attempt in range(10):
            mask = _place(rng, CLASSES[label], height, width, min_side)
            area = int(mask.sum())
            if area < 30 or mask[:, [0, -1]].any() or mask[[0, -1], :].any():  # too small, or cut by the border
                continue
            if all((visible & ~mask).sum() >= min_visible * full for _, visible, full in placed):
                break  # hides no earlier object beyond min_visible
        else:
            continue  # no acceptable placement: one object fewer
        image[mask] = _texture(rng, height, width)[mask]
        placed = [(lab, visible & ~mask, full) for lab, visible, full in placed] + [(label, mask, area)]
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    result = []
    for label, visible, _ in placed:
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        result.append(SynthObject(label, box, visible))
    return np.asarray(image), result


def image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(height, width): the long side is `size`, the short side 60-100% of it, either orientation."""
    short = int(size * rng.uniform(0.6, 1.0))
    return (size, short) if rng.random() < 0.5 else (short, size)


def generate(out: str | Path, images: int, seed: int, size: int = 512, quality: int = 92, progress=None) -> Path:
    """Write `images` scenes to out/images/*.jpg and out/annotations.json; returns the annotation path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco = {
        "info": {"description": f"vfnet-serve synthetic shapes, seed {seed}", "version": "1"},
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)],
    }
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        height, width = image_size(rng, size)
        pixels, objects = render_image(rng, height, width)
        name = f"images/{index:06d}.jpg"
        Image.fromarray(pixels).save(out / name, "JPEG", quality=quality)
        coco["images"].append({"id": index + 1, "file_name": name, "width": width, "height": height})
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": index + 1,
                    "category_id": obj.label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(obj.visible.sum()),
                    "iscrowd": 0,
                }
            )
        if progress is not None:
            progress(index + 1)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path

"""Draw detections on an image: boxes, class names and IACS scores, one colour per class."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .detector import DetectionResult


def class_colour(class_id: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.85, 1.0)  # golden-ratio hues: distinct neighbours
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: np.ndarray, result: DetectionResult, fmt: str = "jpeg") -> bytes:
    """HxWx3 uint8 RGB + its detections (original pixels) -> encoded JPEG or PNG bytes."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 250))
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 40))
    for box, score, label, name in zip(result.boxes, result.scores, result.labels, result.class_names):
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        above = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, above, x1 + (right - left) + 4, above + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, above), text, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG" if fmt == "jpeg" else "PNG", quality=90)
    return buffer.getvalue()

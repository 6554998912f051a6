"""Synthetic videos for the `vfnet predict` tests: frames drawn with numpy, encoded with PyAV.

Other modules here import `write_video` (`from .conftest import write_video`) and take the
`scenes` fixture. Both need PyAV (the `predict` extra); without it the tests that use them skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SCENE_SIZE = (160, 224)  # (height, width): even, as yuv420p needs, and not square, so transposes show


def write_video(path, frames: list[np.ndarray], fps: int = 10, codec: str = "mpeg4", **options: str) -> Path:
    """Encode HxWx3 uint8 RGB `frames` (H and W even) into `path` at `fps`; the container is chosen by
    the suffix (.mp4, .mkv, .avi, ...). Frame i gets pts i in a 1/fps time base, so it decodes with
    time i / fps. `codec` "mpeg4" is in every PyAV wheel and writes no B-frames; "libx264" (in the
    PyAV wheels too) is sharper. `options` go to the encoder, e.g. crf="18" for libx264; container
    options (e.g. movflags="faststart") are not taken here. Returns `path` as a Path."""
    av = pytest.importorskip("av")
    path = Path(path)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = dict(options)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder's delayed packets
    return path


def make_scenes(count: int = 6, size: tuple[int, int] = SCENE_SIZE) -> list[np.ndarray]:
    """`count` HxWx3 uint8 RGB frames of `size` (height, width): a flat dark background, a red
    rectangle moving right 12 px a frame and a green one moving up 6 px a frame, so every frame
    differs from the others and from its mirror image. Large flat areas keep lossy codecs accurate."""
    height, width = size
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), (20, 40, 60), dtype=np.uint8)
        frame[20:70, 10 + 12 * i : 70 + 12 * i] = (230, 30, 30)
        frame[height - 60 - 6 * i : height - 20 - 6 * i, width - 60 : width - 16] = (30, 200, 60)
        frames.append(frame)
    return frames


@pytest.fixture
def scenes() -> list[np.ndarray]:
    """Six 160x224 RGB frames with moving rectangles (make_scenes())."""
    return make_scenes()

"""`vfnet export trt` where TensorRT cannot run: help, profile defaults and flags, and one clear line
with exit 1 for every failure (no TensorRT, no GPU, a missing or unsuitable ONNX file)."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import pytest

from vfnet.export.cli import build_parser
from vfnet.export.trt_export import chosen_profile
from vfnet.server.runtime import ModelLoadError
from vfnet.server.runtime.backends.tensorrt.build import onnx_card as read_card
from vfnet.server.runtime.load import DEMO_ONNX

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def vfnet(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfnet.server.cli", *arguments], capture_output=True, text=True)


def arguments(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["trt", "--onnx", str(DEMO_ONNX), "--out", "x.engine", *flags])


def test_help_always_works_and_names_every_flag():
    done = vfnet("export", "trt", "--help")
    assert done.returncode == 0
    for flag in ("--plugin-lib", "--min-batch", "--opt-batch", "--max-batch", "--max-canvas", "--timing-cache", "--workspace", "--builder-optimization-level"):
        assert flag in done.stdout


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_one_clear_line_and_exit_1(tmp_path):
    done = vfnet("export", "trt", "--onnx", str(DEMO_ONNX), "--out", str(tmp_path / "demo.engine"))
    assert done.returncode == 1 and done.stderr.startswith("error: TensorRT is not installed here")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--onnx", "missing.onnx"], "error: missing.onnx: no such file"),
        (["--max-canvas", "500x512"], "error: --max-canvas 500x512: both sides must be multiples of 32"),
        (["--min-batch", "3", "--max-batch", "2"], "error: batch profile must satisfy 1 <= min <= opt <= max, got 3, 2, 2"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_1(flags, message, tmp_path):
    base = {"--onnx": str(DEMO_ONNX), "--out": str(tmp_path / "x.engine")}
    given = dict(zip(flags[::2], flags[1::2]))
    done = vfnet("export", "trt", *[item for pair in {**base, **given}.items() for item in pair])
    assert done.returncode == 1 and done.stderr.strip() == message


def test_a_canvas_that_is_not_height_x_width_is_a_usage_error():
    done = vfnet("export", "trt", "--onnx", str(DEMO_ONNX), "--out", "x.engine", "--opt-canvas", "big")
    assert done.returncode == 2 and "'big' is not HEIGHTxWIDTH, e.g. 800x1344" in done.stderr


def test_the_profile_comes_from_the_card_and_the_flags():
    card = read_card(DEMO_ONNX)
    assert chosen_profile(card, arguments()).shapes() == {"min": (1, 3, 32, 32), "opt": (8, 3, 512, 512), "max": (8, 3, 512, 512)}
    custom = chosen_profile(card, arguments("--max-batch", "4", "--opt-batch", "2", "--opt-canvas", "384x512"))
    assert custom.shapes() == {"min": (1, 3, 32, 32), "opt": (2, 3, 384, 512), "max": (4, 3, 512, 512)}


def test_a_raw_graph_is_refused_by_name(tiny_onnx_raw):
    with pytest.raises(ModelLoadError, match="a --raw graph"):
        read_card(tiny_onnx_raw)

"""The TensorRT glue of StarDeformConv, built against each TensorRT header set with a fake kernel
(glue_test.cpp): creator fields, type and format rules, output shapes, shape checks with named
errors, serialisation round trip, enqueue's arguments, errors to the logger or the error recorder,
and the logger finder: kept at load, asked when logging (from the logging thread), stderr without a
logger. Needs g++, the CUDA runtime headers and library, and the headers in ../shared/third_party."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import CUDA, REPOSITORY

THIRD_PARTY = next((p for p in (REPOSITORY.parent / "shared" / "third_party", Path("/work/shared/third_party")) if p.is_dir()), None)
HEADER_SETS = sorted(THIRD_PARTY.glob("tensorrt-*/include")) if THIRD_PARTY else []


@pytest.mark.skipif(not HEADER_SETS, reason="no TensorRT headers in ../shared/third_party")
@pytest.mark.skipif(CUDA is None, reason="no CUDA toolkit (runtime headers and library)")
@pytest.mark.parametrize("headers", HEADER_SETS, ids=lambda p: p.parent.name)
def test_the_glue_against_each_tensorrt_header_set(headers, tmp_path):
    binary = tmp_path / "glue_test"
    sources = ["tests/trt_plugins/glue_test.cpp", "trt_plugins/star_deform_conv/starDeformConvPlugin.cpp", "trt_plugins/vfnetPlugins.cpp"]
    library = next(p for p in (CUDA / "lib64", CUDA / "lib", CUDA / "targets" / "x86_64-linux" / "lib") if (p / "libcudart.so").exists())
    command = ["g++", "-std=c++17", "-pthread", "-Wall", "-Wextra", "-Werror", "-isystem", str(headers), "-isystem", str(CUDA / "include"),
               "-I", "trt_plugins", *sources, f"-L{library}", "-lcudart", f"-Wl,-rpath,{library}", "-o", str(binary)]  # fmt: skip
    built = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    ran = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("ok "), ran.stdout + ran.stderr
    assert int(ran.stdout.split()[1]) >= 49
    # the two messages logged while the finder had no logger, then while there was no finder: on stderr
    assert ran.stderr.count("StarDeformConv: layer layer needs an int32 field stride") == 2, ran.stderr

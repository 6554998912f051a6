"""What `make plugins` and `make plugins-check` built: SASS for every supported GPU generation plus
PTX, no register spills, and TensorRT libraries that export exactly the loader's entry points."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfnet.trt_plugins import library_path, plugin_dir
from vfnet.trt_plugins.build_report import resource_rows

from .conftest import NVCC, REPOSITORY

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
CUOBJDUMP = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "nvidia" / "cu13" / "bin" / "cuobjdump"
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine: the CUDA kernel is not built")


@needs_nvcc
def test_the_kernel_has_sass_for_every_gpu_generation_and_ptx_for_newer_ones():
    tool = str(CUOBJDUMP) if CUOBJDUMP.is_file() else shutil.which("cuobjdump")
    assert tool, "cuobjdump is missing: pip install nvidia-cuda-cuobjdump (part of the dev extra)"
    library = str(library_path("vfnet_star_deform_conv_cuda"))
    elves = re.findall(r"\.(sm_\d+)\.cubin", subprocess.run([tool, "--list-elf", library], capture_output=True, text=True, check=True).stdout)
    ptx = re.findall(r"\.(sm_\d+)\.ptx", subprocess.run([tool, "--list-ptx", library], capture_output=True, text=True, check=True).stdout)
    assert sorted(elves, key=lambda a: int(a[3:])) == list(ARCHITECTURES) and ptx == ["sm_120"]


@needs_nvcc
def test_no_kernel_spills_registers_on_any_architecture():
    log = plugin_dir() / "ptxas.log"
    rows = resource_rows(log.read_text())
    assert {(kernel, arch) for kernel, arch, *_ in rows} == {
        (f"starDeformConvKernel<{kind}>", arch) for kind in ("float32", "float16") for arch in ARCHITECTURES
    }
    assert all(spill == 0 and registers <= 255 and smem <= 48 * 1024 for _, _, registers, smem, spill in rows), rows


def test_the_tensorrt_libraries_export_only_the_loader_entry_points():
    built = sorted((REPOSITORY / "build" / "plugins-check").glob("tensorrt-*/libvfnet_trt_plugins.so"))
    if not built:
        pytest.skip("no `make plugins-check` output here (it compiles the glue against the TensorRT headers in ../shared/third_party)")
    assert {path.parent.name.split("-")[1].split(".")[0] for path in built} >= {"10", "11"}
    for library in built:
        exported = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True).stdout
        names = {line.split()[-1] for line in exported.splitlines() if line.split()[1] == "T"}
        assert names == {"getCreators", "setLoggerFinder"}, (library, names)
        register = library.with_name("libvfnet_trt_plugins_autoregister.so")
        needs = subprocess.run(["nm", "-D", "--undefined-only", str(register)], capture_output=True, text=True, check=True).stdout
        assert "getCreators" in needs and "getPluginRegistry" in needs

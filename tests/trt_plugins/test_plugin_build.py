"""What `make plugins` and `make plugins-check` built: SASS for every supported GPU generation plus
PTX, no register spills, tensor-core instructions in the float16 kernel's SASS (and none in the
float32 one's), and TensorRT libraries that export exactly the loader's entry points."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfnet.trt_plugins import library_path, plugin_dir
from vfnet.trt_plugins.build_report import kernel_label, resource_rows

from .conftest import NVCC, REPOSITORY

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
CUOBJDUMP = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "nvidia" / "cu13" / "bin" / "cuobjdump"
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine: the CUDA kernel is not built")
KERNELS = {"starDeformConvCudaCores<float32>", "starDeformConvCudaCores<float16>", "starDeformConvTensorCores<float16>"}


def cuobjdump() -> str:
    tool = str(CUOBJDUMP) if CUOBJDUMP.is_file() else shutil.which("cuobjdump")
    assert tool, "cuobjdump is missing: pip install nvidia-cuda-cuobjdump (part of the dev extra)"
    return tool


def sass_by_kernel(arch: str) -> dict[str, list[str]]:
    """cuobjdump -sass of the CUDA library for one architecture: {kernel label: opcodes}. -sass needs
    nvdisasm, from the nvidia-cuda-nvdisasm wheel (it lands beside the wheel's cuobjdump) or PATH."""
    tool = cuobjdump()
    path = os.pathsep.join([str(Path(tool).parent), os.environ.get("PATH", "")])
    assert shutil.which("nvdisasm", path=path), "nvdisasm is missing (cuobjdump -sass needs it): pip install nvidia-cuda-nvdisasm"
    listing = subprocess.run(
        [tool, "-sass", "-arch", arch, str(library_path("vfnet_star_deform_conv_cuda"))],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PATH": path},
    ).stdout
    kernels: dict[str, list[str]] = {}
    for function in listing.split("Function : ")[1:]:
        name, body = function.split("\n", 1)
        kernels[kernel_label(name.strip())] = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", body)
    return kernels


@needs_nvcc
def test_the_kernel_has_sass_for_every_gpu_generation_and_ptx_for_newer_ones():
    tool = cuobjdump()
    library = str(library_path("vfnet_star_deform_conv_cuda"))
    elves = re.findall(r"\.(sm_\d+)\.cubin", subprocess.run([tool, "--list-elf", library], capture_output=True, text=True, check=True).stdout)
    ptx = re.findall(r"\.(sm_\d+)\.ptx", subprocess.run([tool, "--list-ptx", library], capture_output=True, text=True, check=True).stdout)
    assert sorted(elves, key=lambda a: int(a[3:])) == list(ARCHITECTURES) and ptx == ["sm_120"]


@needs_nvcc
def test_no_kernel_spills_registers_on_any_architecture():
    log = plugin_dir() / "ptxas.log"
    rows = resource_rows(log.read_text())
    assert {(kernel, arch) for kernel, arch, *_ in rows} == {(kernel, arch) for kernel in KERNELS for arch in ARCHITECTURES}
    # two blocks of 256 threads per SM (__launch_bounds__(256, 2)): at most 128 registers, static shared memory
    assert all(spill == 0 and registers <= 128 and smem <= 48 * 1024 for _, _, registers, smem, spill in rows), rows


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_float16_kernel_multiplies_on_tensor_cores_and_the_float32_kernel_does_not(arch):
    """SASS per architecture: the tensor-core kernel's group step is 4 x 16 mma m16n8k16 (HMMA.16816)
    and 16 m16n8k8 (HMMA.1688) on sm_80 and newer, 144 m16n8k8 on sm_75 (Turing has no m16n8k16);
    the CUDA-core kernels have no HMMA and their 36 x 64 FFMA per group. On sm_80 and newer the
    16-byte weight rows go global -> shared by cp.async (LDGSTS). No kernel touches local memory
    (LDL/STL: spills)."""
    kernels = sass_by_kernel(arch)
    assert set(kernels) == KERNELS, set(kernels)
    tensor = kernels["starDeformConvTensorCores<float16>"]
    k16, k8 = tensor.count("HMMA.16816.F32"), tensor.count("HMMA.1688.F32")
    if int(arch[3:]) >= 80:
        assert k16 > 0 and k16 % 64 == 0 and k8 == k16 // 4, (k16, k8)
        for name in ("starDeformConvTensorCores<float16>", "starDeformConvCudaCores<float32>"):
            assert [op for op in kernels[name] if op.startswith("LDGSTS")], name
    else:
        assert k16 == 0 and k8 > 0 and k8 % 144 == 0, (k16, k8)
    for name in ("starDeformConvCudaCores<float32>", "starDeformConvCudaCores<float16>"):
        opcodes = kernels[name]
        assert not [op for op in opcodes if op.startswith("HMMA")], name
        assert opcodes.count("FFMA") >= 36 * 64, (name, opcodes.count("FFMA"))
    for name, opcodes in kernels.items():
        assert not [op for op in opcodes if op.startswith(("LDL", "STL"))], name


@needs_nvcc
def test_the_cuda_c_api_answers_before_touching_a_gpu():
    """The launcher's own answers, decided before any CUDA call (so they hold here, without a GPU):
    an empty batch is a success even with null buffers; tensor cores with float32 and an unknown
    algorithm are cudaErrorInvalidValue (1)."""
    library = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda")))
    default = library.vfnetStarDeformConvCuda
    default.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    chosen = library.vfnetStarDeformConvCudaWith
    chosen.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    for kind in (0, 1):
        assert default(kind, None, None, None, None, 0, 8, 5, 7, 4, 8, None) == 0
        for algorithm in (0, 1):
            assert chosen(algorithm, kind, None, None, None, None, 0, 8, 5, 7, 4, 8, None) == 0
    assert chosen(2, 1, None, None, None, None, 0, 8, 5, 7, 4, 8, None) == 0
    assert chosen(2, 0, None, None, None, None, 1, 8, 5, 7, 4, 8, None) == 1  # tensor cores take float16 only
    assert chosen(3, 1, None, None, None, None, 0, 8, 5, 7, 4, 8, None) == 1


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
        if register.exists():  # built only where a libnvinfer is found (test_plugin_libraries.py covers both cases)
            needs = subprocess.run(["nm", "-D", "--undefined-only", str(register)], capture_output=True, text=True, check=True).stdout
            assert "getCreators" in needs and "getPluginRegistry" in needs

"""The build step: trt_plugins with CMake for sm_90 and the GPU's own architecture; ptxas' registers,
shared memory and spills per kernel (trt_plugins/build_report.py); the kernel paths in the built library;
SASS instruction counts per architecture (cuobjdump)."""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import REPOSITORY
from .kernels import kernel_paths
from .machine import find_tool
from .processes import remaining, run_tool
from .report import Report

SASS_COUNTED = ("FFMA", "HFMA2", "HMMA", "HGMMA", "IMMA", "LDS", "LDSM", "STS", "LDG", "STG", "BAR")
SASS_COLUMNS = ("instructions", "FFMA", "HFMA2", "HMMA", "HGMMA", "LDS", "LDSM", "STS", "LDG", "BAR")


def step_build(context: dict, report: Report) -> None:
    gpu = context["mode"] == "gpu"
    cmake, nvcc = find_tool("cmake", context), context.get("nvcc") or find_tool("nvcc", context)
    log = Path(context["out"]) / "build.log"
    if not cmake:
        report.check("cmake found", False, "no cmake on PATH")
        return
    build = Path(context["plugin_dir"])
    shutil.rmtree(build, ignore_errors=True)  # a fresh build, so that ptxas reports every kernel
    build.mkdir(parents=True)
    architectures = sorted({"90", context.get("gpu_arch") or "90"})
    configure = [cmake, "-S", str(REPOSITORY / "trt_plugins"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
    configure.append("-DCMAKE_CUDA_ARCHITECTURES=" + ";".join(f"{a}-real" for a in architectures))
    if nvcc:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    code, configured = run_tool(configure, log, min(120, remaining(context)))
    if not report.check("cmake configures trt_plugins", code == 0, f"exit {code}; see build.log"):
        return
    said = [line[len("-- vfnet: ") :] for line in configured.splitlines() if line.startswith("-- vfnet: ")]
    report.figures["cmake"] = said
    cuda = any("building vfnet_star_deform_conv_cuda" in line for line in said)
    targets = ["vfnet_star_deform_conv_host"] + (["vfnet_star_deform_conv_cuda"] if cuda else [])
    started = time.monotonic()
    code, built = run_tool([cmake, "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", *targets], log, remaining(context) - 30)
    report.figures["build_seconds"] = round(time.monotonic() - started, 1)
    host_library, cuda_library = build / "libvfnet_star_deform_conv_host.so", build / "libvfnet_star_deform_conv_cuda.so"
    report.check("the host build (libvfnet_star_deform_conv_host.so)", host_library.is_file(), f"cmake --build exit {code}")
    report.context.update(host_library=host_library.is_file(), cuda_library=False)
    record_kernel_paths(report, cuda_library if cuda_library.is_file() else None)
    if not cuda:
        reason = "; ".join(line for line in said if "SKIPPED the CUDA" in line) or "CMake found no nvcc"
        if gpu:
            report.check("the CUDA kernel (libvfnet_star_deform_conv_cuda.so)", False, reason)
        else:
            report.skip("the CUDA kernel (libvfnet_star_deform_conv_cuda.so)", reason)
        return
    if not report.check("the CUDA kernel (libvfnet_star_deform_conv_cuda.so)", cuda_library.is_file(), f"for {', '.join(f'sm_{a}' for a in architectures)}"):
        return
    report.context["cuda_library"] = True
    check_ptxas(report, built, architectures)
    check_sass(context, report, cuda_library, architectures)


def record_kernel_paths(report: Report, cuda_library: Path | None) -> None:
    """The kernel paths (kernels.kernel_paths) into the figures; where the CUDA library was built, a check
    that it exports each path's entry point."""
    paths = kernel_paths()
    report.figures["kernel_paths"] = [dataclasses.asdict(p) for p in paths]
    described = "; ".join(f"{p.name}: {p.symbol}({''.join(f'{n}, ' for n in p.prefix)}type {'/'.join(map(str, p.kinds.values()))}, ...)" for p in paths)
    if cuda_library is None:
        report.info("the C API's kernel paths", f"{described} (no CUDA library built to find them in)")
    else:
        try:
            library = ctypes.CDLL(str(cuda_library))
            missing = [p.symbol for p in paths if not hasattr(library, p.symbol)]
        except OSError as exc:
            missing = [f"the library does not load: {exc}"]
        report.check("the C API's kernel paths", not missing, described + (f"; not exported: {', '.join(sorted(set(missing)))}" if missing else ""))
    report.info("tensor-core path", ", ".join(p.name for p in paths if p.algorithm == "tensor_cores") or "none")


def load_build_report():
    """trt_plugins/build_report.py (ptxas' table), loaded by path: no numpy needed."""
    spec = importlib.util.spec_from_file_location("vfnet_build_report", REPOSITORY / "trt_plugins" / "build_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_ptxas(report: Report, built: str, architectures: list[str]) -> None:
    """ptxas' registers, shared memory and spills per kernel and architecture, from the build's output."""
    rows = load_build_report().resource_rows(built)  # (kernel, arch, registers, shared bytes, spill bytes)
    report.figures["ptxas"] = [dict(zip(("kernel", "arch", "registers", "shared_bytes", "spill_bytes"), row)) for row in rows]
    report.table(["kernel (ptxas)", "arch", "registers", "shared memory (bytes)", "spills (bytes)"], [list(row) for row in rows])
    compiled = {row[1] for row in rows}
    report.check(
        "ptxas compiled the kernels for every architecture", all(f"sm_{a}" in compiled for a in architectures), f"{len(rows)} kernel builds: {sorted(compiled)}"
    )
    report.check("no register spills", bool(rows) and all(row[4] == 0 for row in rows), f"spill bytes {[row[4] for row in rows]}")


def check_sass(context: dict, report: Report, cuda_library: Path, architectures: list[str]) -> None:
    """SASS instruction counts per architecture and kernel (cuobjdump -sass), and tensor-core instructions in it."""
    gpu = context["mode"] == "gpu"
    cuobjdump, nvdisasm = find_tool("cuobjdump", context), find_tool("nvdisasm", context)
    if not (cuobjdump and nvdisasm):
        missing = "cuobjdump" if not cuobjdump else "nvdisasm (cuobjdump -sass runs it)"
        if gpu:
            report.check("SASS per architecture", False, f"no {missing} found")
        else:
            report.skip("SASS per architecture", f"no {missing} found here")
        return
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(nvdisasm).parent), env.get("PATH", "")])  # cuobjdump -sass runs nvdisasm from PATH
    code, sass = run_tool([cuobjdump, "-sass", str(cuda_library)], Path(context["out"]) / "build.log", min(120, remaining(context)), env=env)
    functions = sass_counts(sass) if code == 0 else []
    names = short_names([f["function"] for f in functions])
    report.figures["sass"] = [{**f, "kernel": names[f["function"]]} for f in functions]
    report.table(["kernel (SASS)", "arch", *SASS_COLUMNS], [[names[f["function"]], f["arch"], *(f[c] for c in SASS_COLUMNS)] for f in functions])
    have = {f["arch"] for f in functions}
    report.check(
        "SASS for every architecture built", code == 0 and all(f"sm_{a}" in have for a in architectures), f"cuobjdump exit {code}; SASS for {sorted(have)}"
    )
    with_mma = sorted({f"{names[f['function']]} ({f['arch']})" for f in functions if f["HMMA"] + f["HGMMA"] > 0})
    report.check("tensor-core instructions (HMMA/HGMMA) in the SASS", bool(with_mma), ", ".join(with_mma) or "none, yet a tensor-core path is exposed")


def sass_counts(sass: str) -> list[dict]:
    """Per (architecture, function) of `cuobjdump -sass`: instruction counts of the kinds that matter here."""
    rows, arch, function = [], None, None
    for line in sass.splitlines():
        if match := re.match(r"\s*arch = (sm_\w+)", line):
            arch = match[1]
        elif match := re.match(r"\s*Function : (\S+)", line):
            function = {"arch": arch, "function": match[1], "instructions": 0, **dict.fromkeys(SASS_COUNTED, 0)}
            rows.append(function)
        elif function and (match := re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)):
            function["instructions"] += 1
            if match[1] in SASS_COUNTED:
                function[match[1]] += 1
    return rows


def readable_kernel(name: str) -> str:
    """'void vfnet::star::(anonymous namespace)::starDeformConvKernel<float>(const T1 *, ...)' -> 'starDeformConvKernel<float>'."""
    match = re.search(r"(\w+(?:<[^()]*>)?)\(", name)
    return match[1] if match else name[:80]


def short_names(mangled: list[str]) -> dict[str, str]:
    """Mangled -> 'starDeformConvKernel<float>' (c++filt where it exists, else build_report's label)."""
    names = dict.fromkeys(mangled, "")
    filt = shutil.which("c++filt")
    if filt and mangled:
        demangled = subprocess.run([filt], input="\n".join(mangled), capture_output=True, text=True, timeout=30).stdout.splitlines()
        for name, readable in zip(mangled, demangled):
            names[name] = readable_kernel(readable)
    label = load_build_report().kernel_label
    return {name: short or label(name)[:80] for name, short in names.items()}

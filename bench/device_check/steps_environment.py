"""The environment step: the GPU, the driver, the Python packages and the CUDA tools found."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from .machine import find_tool, optional_import
from .processes import run_tool
from .report import Report


def step_environment(context: dict, report: Report) -> None:
    gpu = context["mode"] == "gpu"
    versions = {"python": sys.version.split()[0]}
    for module in ("torch", "torchvision", "onnxruntime", "onnx", "numpy", "PIL", "cv2", "safetensors", "pytest"):
        imported = optional_import(module)
        versions[module] = getattr(imported, "__version__", "?") if imported else "missing"
    for module in ("tensorrt", "fastapi", "uvicorn"):
        versions[module] = "present" if importlib.util.find_spec(module) else "missing"
    tools = {name: find_tool(name, context) for name in ("nvcc", "cmake", "cuobjdump", "nvdisasm", "compute-sanitizer", "ncu", "nvidia-smi")}
    if tools["nvcc"]:
        code, output = run_tool([tools["nvcc"], "--version"], Path(context["out"]) / "build.log", 30)
        versions["nvcc version"] = (re.findall(r"release ([\d.]+)", output) or ["?"])[0]
    smi = ""
    if tools["nvidia-smi"]:
        query = [tools["nvidia-smi"], "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"]
        smi = (subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines() or [""])[0]
    torch = sys.modules.get("torch")
    cuda = bool(torch and torch.cuda.is_available())
    description = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        arch = f"{props.major}{props.minor}"
        description = f"{props.name} (sm_{arch}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)"
        if smi:
            description += f"; nvidia-smi: {smi}"
        report.context.update(gpu_arch=arch)
    report.context.update(cuda=cuda, gpu_description=description, tools=tools)
    report.context["software"] = ", ".join(f"{k} {v}" for k, v in versions.items() if v not in ("missing", "present"))
    report.figures.update(versions=versions, tools=tools, nvidia_smi=smi, cpu_count=os.cpu_count(), python_executable=sys.executable)
    report.table(["package or tool", "version or path"], [[k, v] for k, v in versions.items()] + [[k, v or "not found"] for k, v in tools.items()])
    if gpu:
        report.check("torch sees a CUDA GPU", cuda, description or f"torch {versions['torch']}: torch.cuda.is_available() is False")
        report.check("nvcc and cmake found", bool(tools["nvcc"] and tools["cmake"]), f"nvcc {tools['nvcc']}, cmake {tools['cmake']}")
        for tool in ("cuobjdump", "compute-sanitizer", "ncu"):
            if not tools[tool]:
                report.info(f"{tool} not found", "its step is skipped")
    else:
        report.info("machine", f"--cpu-standin: {os.cpu_count()} CPUs; torch {versions['torch']}; {description or 'no GPU used'}")
        report.check("python runs the stand-in", True, sys.executable)

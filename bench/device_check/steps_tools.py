"""The steps that run NVIDIA's tools on the driver (driver.py): sanitizers (compute-sanitizer memcheck,
racecheck, initcheck, synccheck on small cases) and profile (one ncu profile at P3 per path and type:
duration, achieved occupancy, pipe use, shared-memory bank conflicts)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .driver import driver_command, expand_launches
from .kernels import CHANNELS, LEVELS, kernel_paths
from .machine import find_tool
from .processes import remaining, run_tool
from .report import Report, SkipStep
from .steps_build import readable_kernel

# compute-sanitizer's cases (B, C, H, W, C_out, stride): a tiny one, and one with partial tiles of cells,
# channels and K = 9 C.
SANITIZER_SHAPES = ((2, 5, 7, 9, 6, 8), (1, 70, 9, 70, 65, 16))
SANITIZERS = ("memcheck", "racecheck", "initcheck", "synccheck")
NCU_METRICS = {
    "gpu__time_duration.sum": "duration",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved occupancy %",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active": "tensor pipe (HMMA) %",
    "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active": "tensor pipe (GMMA) %",
    "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active": "FMA pipe %",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "SM throughput %",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": "shared-load bank conflicts",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": "shared-load wavefronts",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum": "shared-store bank conflicts",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum": "shared-store wavefronts",
}
PROFILE_COLUMNS = (
    "path",
    "type",
    "kernel",
    "ms",
    "TFLOP/s",
    "achieved occupancy %",
    "tensor pipe % (HMMA / GMMA)",
    "FMA pipe %",
    "shared-load conflicts / wavefronts",
    "shared-store conflicts / wavefronts",
)


def need_tool(name: str, context: dict, where: str) -> str:
    """The path of tool `name`, where the build step made the CUDA library; else SkipStep saying why."""
    tool = find_tool(name, context)
    if not tool:
        raise SkipStep(f"{name} not found ({where})")
    if not (Path(context["plugin_dir"]) / "libvfnet_star_deform_conv_cuda.so").is_file():
        raise SkipStep("no CUDA library was built (see the build step)")
    return tool


def step_sanitizers(context: dict, report: Report) -> None:
    sanitizer = need_tool("compute-sanitizer", context, "PATH, /usr/local/cuda")
    log = Path(context["out"]) / "sanitizers.log"
    spec = {"shapes": SANITIZER_SHAPES, "paths": [p.name for p in kernel_paths()], "streams": ["created", "default"], "check": True, "seed": 0}
    report.info(
        "driver",
        f"shapes {[list(s) for s in SANITIZER_SHAPES]} (B, C, H, W, C_out, stride), each path and type, checked against the host build; "
        f"memcheck and synccheck on a created and the default stream ({len(expand_launches(spec))} launches), racecheck and initcheck on a created one",
    )
    for index, tool in enumerate(SANITIZERS):
        share = remaining(context) / (len(SANITIZERS) - index)
        if share < 10:
            report.skip(tool, "the step's time box was spent")
            continue
        options = ["--leak-check", "full"] if tool == "memcheck" else []
        streams = ["created", "default"] if tool in ("memcheck", "synccheck") else ["created"]  # racecheck and initcheck are the slow ones
        driver = driver_command({**spec, "streams": streams})
        code, output = run_tool([sanitizer, "--tool", tool, "--error-exitcode", "97", *options, *driver], log, share)
        refused = re.search(r"Device not supported|Unable to find injection library|LibraryNotLoaded|Failed to initialize", output)
        if refused and "driver:" not in output:
            report.skip(tool, f"compute-sanitizer cannot run on this machine: {refused[0]}")
            continue
        errors = re.search(r"ERROR SUMMARY: (\d+) error", output) or re.search(r"\((\d+) errors?, \d+ warnings?\)", output)
        warnings = re.search(r"\(\d+ errors?, (\d+) warnings?\)", output)
        count = int(errors[1]) if errors else None
        report.figures[tool] = {"exit": code, "errors": count, "warnings": int(warnings[1]) if warnings else None}
        detail = (
            f"exit {code}, {count if count is not None else '?'} errors"
            + (f", {warnings[1]} warnings" if warnings else "")
            + ("" if "driver: ok" in output else "; the driver did not finish clean")
        )
        report.check(tool, code == 0 and count == 0 and "driver: ok" in output, detail + "; see sanitizers.log")


def step_profile(context: dict, report: Report) -> None:
    ncu = need_tool("ncu", context, "PATH, /usr/local/cuda, /opt/nvidia/nsight-compute")
    log = Path(context["out"]) / "ncu.log"
    level, stride, height, width = LEVELS[0]
    spec = {
        "shapes": [(1, CHANNELS, height, width, CHANNELS, stride)],
        "paths": [p.name for p in kernel_paths()],
        "streams": ["created"],
        "check": False,
        "seed": 0,
    }
    launches = expand_launches(spec)
    metrics = list(NCU_METRICS)
    code, output, dropped = None, "", []
    for _ in range(4):  # drop the metrics this ncu or GPU does not know (named in its ==ERROR== lines), then profile again
        command = [ncu, "--clock-control", "none", "--target-processes", "all", "--csv", "--print-units", "base", "--metrics", ",".join(metrics)]
        code, output = run_tool([*command, *driver_command(spec)], log, remaining(context))
        errors = [line for line in output.splitlines() if "==ERROR==" in line]
        unknown = [m for m in metrics if any(m in line for line in errors)]
        if code == 0 or code is None or not unknown or remaining(context) < 20:
            break
        dropped += unknown
        metrics = [m for m in metrics if m not in unknown]
    refused = re.search(r"ERR_NVGPUCTRPERM|Failed to initialize the profiler|LibraryNotLoaded|not supported on this", output)
    if refused and "driver: ok" not in output:
        raise SkipStep(f"ncu cannot read this GPU's counters here: {refused[0]}")
    if dropped:
        report.info("metrics this ncu does not know", ", ".join(dropped))
    profiled = parse_ncu_csv(output)
    flops = 2 * CHANNELS * 9 * CHANNELS * height * width
    rows, figures = [], []
    for (launch_shape, dtype, path, _), (_, values) in zip(launches, sorted(profiled.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)):
        value = {m: values.get(m, (None, ""))[0] for m in NCU_METRICS}
        duration = values.get("gpu__time_duration.sum", (None, ""))
        ms = milliseconds(*duration) if duration[0] is not None else None

        def ratio(conflicts: str, wavefronts: str, value=value) -> str:
            if value[conflicts] is None or not value[wavefronts]:
                return "?"
            return f"{value[conflicts]:.3g} / {value[wavefronts]:.3g} ({value[conflicts] / value[wavefronts]:.2f})"

        def percent(metric: str, value=value) -> str:
            return "?" if value[metric] is None else f"{value[metric]:.1f}"

        tensor = " / ".join(percent(m) for m in NCU_METRICS if "tensor" in m and m in metrics)
        rows.append(
            [path.name, dtype, readable_kernel(values["kernel"]), f"{ms:.3f}" if ms else "?", f"{flops / ms / 1e9:.1f}" if ms else "?"]
            + [
                percent("sm__warps_active.avg.pct_of_peak_sustained_active"),
                tensor or "?",
                percent("sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active"),
            ]
            + [ratio("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum", "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum")]
            + [ratio("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum", "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum")]
        )
        figures.append({"path": path.name, "type": dtype, "shape": list(launch_shape), "kernel": values["kernel"], "milliseconds": ms, "metrics": value})
    report.figures["ncu"] = figures
    report.table(list(PROFILE_COLUMNS), rows)
    report.check(
        f"ncu profiled every launch at {level} batch 1",
        code == 0 and len(profiled) == len(launches),
        f"exit {code}; {len(profiled)} of {len(launches)} launches; see ncu.log",
    )


def parse_ncu_csv(output: str) -> dict[str, dict]:
    """ncu --csv (details page) -> {ID: {"kernel": name, metric: (value, unit)}}."""
    rows = list(csv.reader(line for line in output.splitlines() if line.startswith('"')))
    header = next((row for row in rows if "Metric Name" in row), None)
    if header is None:
        return {}
    column = {name: index for index, name in enumerate(header)}
    launches: dict[str, dict] = {}
    for row in rows:
        if row is header or len(row) != len(header) or row == header:
            continue
        launch = launches.setdefault(row[column["ID"]], {"kernel": row[column["Kernel Name"]]})
        text = row[column["Metric Value"]].replace(",", "")
        try:
            launch[row[column["Metric Name"]]] = (float(text), row[column.get("Metric Unit", column["Metric Value"])])
        except ValueError:
            launch[row[column["Metric Name"]]] = (None, text)
    return launches


def milliseconds(value: float, unit: str) -> float:
    return value * {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3, "s": 1e3}.get(unit, 1e-6)

"""The command line and the run: the steps in order, each in a child process of its own (a crash or a hang
stays there) under its time box, all inside one budget; then figures.json and summary.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import REPOSITORY
from .driver import run_driver
from .processes import kill_group, this_package
from .pythonpath import make_pythonpath
from .report import Report, SkipStep, overall_passed, step_not_run, summary_lines
from .steps_build import step_build
from .steps_environment import step_environment
from .steps_gpu_tests import step_gpu_tests
from .steps_kernel import step_kernel
from .steps_model import step_backend, step_network
from .steps_timing import step_timing
from .steps_tools import step_profile, step_sanitizers

DEFAULT_OUT = REPOSITORY / "build" / "device-check"
WORK = REPOSITORY / "build" / "device-check-work"  # the plugin build, the steps' context and results
OUT_FILES = ("summary.md", "figures.json", "steps.log", "build.log", "sanitizers.log", "ncu.log", "pytest.log")
LOG_LIMIT = 4 << 20  # bytes kept of each log (its head and tail)
GPU_BUDGET, STANDIN_BUDGET = 480, 110  # seconds for the whole check


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    box: int  # its time box on the GPU machine, seconds
    standin: int | str  # its time box with --cpu-standin, or why it is skipped there
    run: Callable[[dict, Report], None]  # (context, report); raises SkipStep to skip with a reason


STEPS = (
    Step("environment", "The GPU, driver, Python packages and CUDA tools", 60, 30, step_environment),
    Step("build", "The plugins (trt_plugins) for sm_90 and the GPU's architecture; ptxas table; SASS per architecture; the kernel paths", 240, 90, step_build),
    Step(
        "kernel",
        "Each kernel path against torchvision deform_conv2d at the five level shapes; identities; empty batch; a non-default stream",
        150,
        60,
        step_kernel,
    ),
    Step("sanitizers", "Compute-sanitizer memcheck, racecheck, initcheck, synccheck on small cases", 200, "compute-sanitizer needs a GPU", step_sanitizers),
    Step("profile", "One ncu profile at P3: duration, achieved occupancy, pipe use, shared-memory bank conflicts", 150, "ncu needs a GPU", step_profile),
    Step("timing", "Ours against torchvision, CUDA events, batch 1 and 8, float32 and float16, at P3", 120, "timing the CUDA kernel needs a GPU", step_timing),
    Step(
        "network",
        "The vfnet_r50_fpn network (random weights) and the demo model: our kernel in the star convolutions against torchvision",
        180,
        60,
        step_network,
    ),
    Step("backend", "The torch backend on CUDA against CPU torch and ONNX Runtime (CPU) on the demo ONNX, held-out images", 150, 60, step_backend),
    Step("gpu-tests", "The project's GPU tests: pytest -m gpu on the test files that need neither TensorRT nor the HTTP service", 180, 40, step_gpu_tests),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=sys.modules[__package__].__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-standin", action="store_true", help="no GPU: the host build stands in for the kernel; GPU steps are skipped")
    parser.add_argument("--out", help="where the summary, figures and logs go (default: $OUT, else build/device-check)")
    parser.add_argument("--budget", type=int, help=f"seconds for the whole check (default {GPU_BUDGET}; {STANDIN_BUDGET} with --cpu-standin)")
    parser.add_argument("--only", help=f"a comma-separated subset of the steps: {','.join(s.name for s in STEPS)}")
    parser.add_argument("--nvcc", help="the nvcc to build with (default: PATH, /usr/local/cuda)")
    parser.add_argument("--pythonpath", action="store_true", help="make build/pythonpath (vfnet as symlinks) and print its path")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)  # a step's child process (run_child)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--driver", help=argparse.SUPPRESS)  # what compute-sanitizer and ncu run (driver.py)
    args = parser.parse_args(argv)
    if args.pythonpath:
        print(make_pythonpath())
        return 0
    if args.driver:
        return run_driver(json.loads(args.driver))
    if args.run_step:
        return run_step(args.run_step, Path(args.context), Path(args.result))
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    """The parent: every step (or --only's) in order, each skipped, run in a child, or failed by it."""
    mode = "standin" if args.cpu_standin else "gpu"
    out = Path(args.out or os.environ.get("OUT") or DEFAULT_OUT).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    pythonpath = make_pythonpath()
    plugin_dir = WORK / "plugins"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VFNET_PLUGIN_DIR": str(plugin_dir)}
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    budget = args.budget or (STANDIN_BUDGET if args.cpu_standin else GPU_BUDGET)
    context = {"mode": mode, "out": str(out), "plugin_dir": str(plugin_dir), "nvcc": args.nvcc}
    only = {name.strip() for name in args.only.split(",")} if args.only else None
    unknown = (only or set()) - {s.name for s in STEPS}
    if unknown:
        print(f"device-check: unknown step(s) {', '.join(sorted(unknown))}; the steps: {', '.join(s.name for s in STEPS)}", file=sys.stderr)
        return 2
    started, clock = time.monotonic(), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    deadline = started + budget
    print(f"device-check ({mode}): {budget} s budget; results in {out}", flush=True)
    results: dict[str, dict] = {}
    with open(out / "steps.log", "a") as log:
        for step in STEPS:
            if only is not None and step.name not in only:
                continue
            begun = time.monotonic()
            box = step.box if mode == "gpu" else step.standin
            remaining = deadline - begun - 3
            if isinstance(box, str):
                result = step_not_run("skipped", f"--cpu-standin: {box}")
            elif mode == "gpu" and step.name not in ("environment", "build") and context.get("cuda") is False:
                result = step_not_run("skipped", "torch sees no CUDA GPU (see the environment step)")
            elif remaining < 10:
                result = step_not_run("skipped", f"the {budget} s budget was spent before this step")
            else:
                result = run_child(step, context, WORK, min(box, remaining), log, env)
            context.update(result.pop("context", None) or {})
            result["seconds"], result["what"] = time.monotonic() - begun, step.what
            results[step.name] = result
            print(f"device-check: {step.name}: {result['status']} ({result['seconds']:.1f} s): {result['reason'][:400]}", flush=True)
    run = {
        "mode": mode,
        "command": " ".join([Path(sys.executable).name, "bench/device_check", *sys.argv[1:]]),
        "started": clock,
        "seconds": time.monotonic() - started,
        "budget": budget,
        "gpu": context.get("gpu_description") or ("no GPU (--cpu-standin)" if mode == "standin" else "no GPU found"),
        "software": context.get("software"),
        "python": sys.executable,
        "passed": overall_passed(results),
    }
    (out / "figures.json").write_text(json.dumps({"run": run, "steps": results}, indent=1, default=str) + "\n")
    (out / "summary.md").write_text("\n".join(summary_lines(run, results)) + "\n")
    for name in OUT_FILES:
        trim_log(out / name)
    print(f"device-check: {'passed' if run['passed'] else 'FAILED'} in {run['seconds']:.0f} s; {out / 'summary.md'}", flush=True)
    return 0 if run["passed"] else 1


def run_child(step: Step, context: dict, work: Path, timeout: float, log, env: dict) -> dict:
    """One step in a child process (run_step there); its result, or a failed one."""
    context_path, result_path = work / f"{step.name}.context.json", work / f"{step.name}.result.json"
    result_path.unlink(missing_ok=True)
    context_path.write_text(json.dumps({**context, "deadline": time.time() + timeout}))
    log.write(f"\n===== {step.name} (time box {timeout:.0f} s) =====\n")
    log.flush()
    command = this_package("--run-step", step.name, "--context", str(context_path), "--result", str(result_path))
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPOSITORY, start_new_session=True)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        process.wait()
        return step_not_run("failed", f"timed out after {timeout:.0f} s (its time box); see steps.log")
    kill_group(process)  # anything it left running
    if not result_path.is_file():
        return step_not_run("failed", f"its process ended with code {code} and no result (a crash?); see steps.log")
    return json.loads(result_path.read_text())


def run_step(name: str, context_path: Path, result_path: Path) -> int:
    """A child process: one step, its result as JSON in result_path."""
    step = next(step for step in STEPS if step.name == name)
    context, report, skipped_because = json.loads(context_path.read_text()), Report(), None
    try:
        step.run(context, report)
    except SkipStep as reason:
        skipped_because = str(reason)
    except Exception as exc:  # the step's own failure, recorded; the other steps go on
        traceback.print_exc()
        report.check("the step ran to its end", False, f"{type(exc).__name__}: {exc}"[:600])
    result_path.write_text(json.dumps(report.result(skipped_because), default=str))
    return 0


def trim_log(path: Path, limit: int = LOG_LIMIT) -> None:
    """Keep a log under `limit` bytes: its first quarter and its last three quarters."""
    if path.is_file() and path.stat().st_size > limit:
        data = path.read_bytes()
        head, tail = data[: limit // 4], data[-(limit * 3 // 4) :]
        path.write_bytes(head + f"\n[... {len(data) - len(head) - len(tail)} bytes cut ...]\n".encode() + tail)

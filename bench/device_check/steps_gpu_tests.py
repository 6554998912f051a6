"""The gpu-tests step: pytest -m gpu on the project's test files that need neither TensorRT nor the HTTP
service (with --cpu-standin: collected only)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from . import REPOSITORY
from .machine import optional_import
from .processes import remaining, run_tool
from .report import Report, SkipStep


def step_gpu_tests(context: dict, report: Report) -> None:
    if optional_import("pytest") is None:
        raise SkipStep(f"pytest is not importable by {sys.executable}")
    missing = [m for m in ("torch", "numpy", "PIL", "cv2") if importlib.util.find_spec(m) is None]
    if missing and context["mode"] != "gpu":
        raise SkipStep(
            f"the test files import {', '.join(missing)}, which {sys.executable} lacks: the stand-in needs the venv's python (make device-check-standin)"
        )
    files, skipped = classify_gpu_test_files()
    for path, reason in skipped:
        report.skip(str(path.relative_to(REPOSITORY)), reason)
    if not files:
        raise SkipStep("no test file with gpu tests can run here")
    names = [str(p.relative_to(REPOSITORY)) for p in files]
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-p", "no:cacheprovider", *names]
    log = Path(context["out"]) / "pytest.log"
    if context["mode"] != "gpu":
        code, output = run_tool([*command, "--collect-only", "-q"], log, remaining(context))
        collected = re.search(r"(\d+)(?:/\d+)? tests? collected", output)
        report.check(f"pytest collects the gpu tests of {', '.join(names)}", code == 0, f"{collected[1] if collected else '?'} collected; see pytest.log")
        raise SkipStep(f"--cpu-standin: the gpu tests need a GPU ({collected[1] if collected else '?'} collected from {len(names)} files)")
    code, output = run_tool(command, log, remaining(context))
    summary = re.findall(r"=+ (.*\d+ (?:passed|failed|skipped|errors?|deselected).*) in [\d.]+s", output)
    report.figures["pytest"] = {"exit": code, "files": names, "summary": summary[-1] if summary else None}
    report.check(f"pytest -m gpu {' '.join(names)}", code == 0, f"exit {code}: {summary[-1] if summary else 'no summary'}; see pytest.log")


def classify_gpu_test_files() -> tuple[list[Path], list[tuple[Path, str]]]:
    """The test files with gpu tests: those to run here, and those skipped with the reason."""
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    has_service = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "pydantic_settings"))
    run, skip = [], []
    for path in sorted((REPOSITORY / "tests").rglob("test_*.py")):
        text = path.read_text(errors="replace")
        if not re.search(r"pytest\.mark\.gpu\b", text):
            continue
        if re.search(r"^pytestmark\s*=.*mark\.trt\b", text, re.M) and not has_tensorrt:
            skip.append((path, "every test in it needs TensorRT (not installed here)"))
        elif "app" in path.relative_to(REPOSITORY / "tests").parts[:-1] and not has_service:
            skip.append((path, "it runs `vfnet serve`, which needs FastAPI, uvicorn and pydantic-settings (not installed here)"))
        else:
            run.append(path)
    return run, skip

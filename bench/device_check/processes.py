"""Processes under time limits: a tool run in a process group of its own and logged (run_tool), the
group killed with its children (kill_group), the seconds left of a step's time box (remaining), and the
command that runs this package again (this_package)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import REPOSITORY


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_tool(command: list[str], log_path: Path, timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run `command` in a process group of its own, appending its output to log_path; returns (its exit
    code, or None when it ran past `timeout` seconds and was killed with its children; its output)."""
    started = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env, cwd=REPOSITORY, start_new_session=True
        )
        try:
            output, _ = process.communicate(timeout=max(1.0, timeout))
            code = process.returncode
        except subprocess.TimeoutExpired:
            kill_group(process)
            output, _ = process.communicate()
            code = None
        log.write(output)
        log.write(f"[{'timed out' if code is None else f'exit {code}'} after {time.monotonic() - started:.1f} s]\n")
    return code, output


def remaining(context: dict, reserve: float = 3.0) -> float:
    """Seconds left of this step's time box (its context's deadline, set by run.py)."""
    return context["deadline"] - time.time() - reserve


def this_package(*arguments: str) -> list[str]:
    """The command that runs this package again with this python (a step's child process, the driver)."""
    return [sys.executable, str(Path(__file__).resolve().parent), *arguments]

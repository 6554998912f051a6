"""What a step found (Report; SkipStep skips a step with its reason), and summary.md made of the steps' results."""

from __future__ import annotations


class SkipStep(Exception):
    """Raised by a step that cannot run here; its message is the reason."""


class Report:
    """What one step found: checks (passed, failed, skipped or info), figures for figures.json, markdown
    lines for the summary, and context for the steps after it."""

    def __init__(self) -> None:
        self.checks: list[dict] = []
        self.figures: dict = {}
        self.lines: list[str] = []
        self.context: dict = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"name": name, "status": "passed" if ok else "failed", "detail": detail})
        return ok

    def skip(self, name: str, reason: str) -> None:
        self.checks.append({"name": name, "status": "skipped", "detail": reason})

    def info(self, name: str, detail: str) -> None:
        self.checks.append({"name": name, "status": "info", "detail": detail})

    def table(self, header: list[str], rows: list[list]) -> None:
        self.lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        self.lines.append("")

    def result(self, skipped_because: str | None = None) -> dict:
        statuses = [c["status"] for c in self.checks]
        failed = [c for c in self.checks if c["status"] == "failed"]
        if failed:
            status = "failed"
            reason = "; ".join(f"{c['name']}: {c['detail']}" for c in failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        elif skipped_because or "passed" not in statuses:
            status = "skipped"
            reason = skipped_because or "; ".join(f"{c['name']}: {c['detail']}" for c in self.checks if c["status"] == "skipped") or "nothing ran"
        else:
            status = "passed"
            passed = statuses.count("passed")
            reason = f"{passed} check{'s' if passed > 1 else ''} passed" + (f", {statuses.count('skipped')} skipped" if "skipped" in statuses else "")
        return {"status": status, "reason": reason, "checks": self.checks, "figures": self.figures, "lines": self.lines, "context": self.context}


def step_not_run(status: str, reason: str) -> dict:
    """The result of a step that did not run to a Report of its own (skipped before it started, or its process failed)."""
    return {"status": status, "reason": reason, "checks": [], "figures": {}, "lines": []}


def overall_passed(results: dict[str, dict]) -> bool:
    """True when no step that ran failed (skipped steps do not fail the check)."""
    return all(result["status"] != "failed" for result in results.values())


def summary_lines(run: dict, results: dict[str, dict]) -> list[str]:
    """summary.md: the machine, the verdict, a table of the steps, then each step's checks and figures."""
    counts = {status: sum(r["status"] == status for r in results.values()) for status in ("passed", "failed", "skipped")}
    verdict = "passed" if overall_passed(results) else "FAILED"
    lines = [
        f"# Device check: {run.get('gpu') or 'no GPU'}",
        "",
        f"`{run.get('command', 'bench/device_check')}` ({run.get('mode', '?')} mode), {run.get('started', '?')}: **{verdict}**: "
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, in {run.get('seconds', 0):.0f} s of a "
        f"{run.get('budget', 0)} s budget.",
    ]
    if run.get("software"):
        lines.append(f"Software: {run['software']}.")
    lines += ["", "| step | status | seconds | reason or result |", "|---|---|---|---|"]
    for name, result in results.items():
        reason = result["reason"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {result['status']} | {result.get('seconds', 0):.1f} | {reason[:300]} |")
    for name, result in results.items():
        lines += ["", f"## {name}: {result['status']}", ""]
        if result.get("what"):
            lines.append(f"{result['what']}.")
        checks = result.get("checks", [])
        tally = {s: sum(c["status"] == s for c in checks) for s in ("passed", "failed", "skipped", "info")}
        if checks:
            lines.append("Checks: " + ", ".join(f"{n} {s}" for s, n in tally.items() if n) + ".")
        if result["status"] != "passed":
            lines.append(f"Reason: {result['reason']}")
        shown = [c for c in checks if c["status"] != "passed"]
        passed = [c for c in checks if c["status"] == "passed"]
        if len(passed) <= 12:
            shown = passed + shown
        if shown:
            lines.append("")
            lines += [f"- {c['status']}: {c['name']}" + (f": {c['detail']}" if c["detail"] else "") for c in shown]
        lines += result.get("lines", [])
    return lines

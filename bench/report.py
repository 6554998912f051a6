"""Writing benchmark results into docs/benchmarks.md, one section per benchmark."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(title: str, text: str, path: Path = DOCS) -> None:
    """Replace the section headed `title` (a '## ...' line) with `text` where it stands, keeping the
    other sections; a new section goes at the end."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    section = text.rstrip("\n") + "\n"
    heading = re.search(rf"^{re.escape(title)}$", existing, flags=re.MULTILINE)  # the whole line, not a longer title it begins
    if heading:
        start = heading.start()
        end = existing.find("\n## ", start + len(title))
        updated = existing[:start] + section + ("\n" + existing[end + 1 :] if end != -1 else "")
    else:
        updated = existing.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def publish(title: str, lines: list[str], write: bool = True) -> int:
    """Print `lines` and, if `write`, write them as the section headed `title` (a --quick run
    does not); the exit code of a benchmark."""
    text = "\n".join(lines)
    if write:
        write_section(title, text)
    print(text)
    return 0


def cpu_description() -> str:
    """The CPU's model name and its vector-instruction flags, to print with every table."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    vector = [f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("f16c",)]
    family = next((line.split(":", 1)[1].strip() for line in info if line.startswith("cpu family")), "?")
    number = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model\t")), "?")
    return f"{model} (family {family} model {number}; {' '.join(vector) or 'no AVX'})"


def gpu_description() -> str:
    """The CUDA GPU's name and compute capability, and the torch and CUDA versions, for GPU tables."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (sm_{major}{minor}), torch {torch.__version__}, CUDA {torch.version.cuda}"

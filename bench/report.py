"""Writing benchmark results into docs/benchmarks.md, one section per benchmark."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(title: str, text: str, path: Path = DOCS) -> None:
    """Replace the section headed `title` (a '## ...' line) with `text`, keeping the other sections."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    if title in existing:
        start = existing.index(title)
        end = existing.find("\n## ", start + len(title))
        existing = existing[:start] + (existing[end + 1 :] if end != -1 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(existing.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")

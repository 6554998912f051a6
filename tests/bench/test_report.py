"""bench/report.py's write_section: a benchmark rewrites its own section of docs/benchmarks.md where it
stands, so hand-written sections that refer to "the section above" stay true."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from report import write_section  # noqa: E402


def test_a_section_is_replaced_in_place_and_a_new_one_appended(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## A\n\nold a\n\n## B\n\nhand-written b\n")
    write_section("## A", "## A\n\nnew a", docs)
    assert docs.read_text() == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nhand-written b\n"
    write_section("## B", "## B\n\nnew b", docs)
    write_section("## C", "## C\n\nc", docs)
    assert docs.read_text() == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nnew b\n\n## C\n\nc\n"


def test_a_title_matches_its_whole_heading_line_not_a_longer_one(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## CPU fast paths: agreement\n\nkept\n\n## CPU fast paths\n\nold\n")
    write_section("## CPU fast paths", "## CPU fast paths\n\nnew", docs)
    assert docs.read_text() == "# Benchmarks\n\n## CPU fast paths: agreement\n\nkept\n\n## CPU fast paths\n\nnew\n"

"""`vfnet models`: the zoo's checkpoints, their presets and AP, and what of them is already downloaded."""

from __future__ import annotations

import argparse
import json
import sys

from .cache import checkpoint_path, converted_path, vfnet_home
from .catalog import UNCONVERTIBLE, ZOO_ENV, ZooEntry, ZooError, load_zoo


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(entry: ZooEntry) -> dict:
    checkpoint, converted = checkpoint_path(entry), converted_path(entry)
    return {
        **entry.as_dict(),
        "checkpoint": str(checkpoint) if checkpoint.is_file() else None,
        "converted": str(converted) if converted.is_file() else None,
    }


def _table(rows: list[dict]) -> str:
    header = ("name", "preset", "AP val", "test-dev", "source", "downloaded")
    lines = [
        (r["name"], r["preset"], _ap(r["ap_val"]), _ap(r["ap_test_dev"]), r["source"], ", ".join(p for p in (r["checkpoint"], r["converted"]) if p) or "no")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in [header, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet models",
        description="The official VFNet checkpoints (mmdetection v2.0 model zoo; COCO, 1333x800) and those of a zoo file:\n"
        "name, preset, published box AP, where each comes from, and whether it is downloaded\n"
        f"({vfnet_home()}/checkpoints/<file>) or converted ({vfnet_home()}/models/<name>.safetensors;\n"
        "$VFNET_HOME moves them). --json also gives each entry's aliases (mmdetection 3.x config names), URL and hash.",
        epilog="examples:\n"
        "  vfnet models\n"
        "  vfnet models --json | jq -r '.models[] | select(.checkpoint) | .name'\n"
        "  vfnet models --zoo my_zoo.json      # a JSON list of {name, url, sha256, preset[, aliases, file_name, ap_val, ap_test_dev, input_size]}\n"
        f"  {ZOO_ENV}=my_zoo.json vfnet models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--zoo", metavar="FILE", default=None, help=f"a user zoo file (JSON) whose entries add to or replace built-in ones (default: ${ZOO_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (home, models, unconvertible) instead of tables")
    args = parser.parse_args(argv)
    try:
        rows = [_row(entry) for entry in load_zoo(args.zoo)]
    except ZooError as e:
        print(f"vfnet models: {e}", file=sys.stderr)
        return 2
    unconvertible = [
        {"name": m.name, "reason": m.reason, "ap_test_dev": m.ap_test_dev, "input_size": list(m.input_size) if m.input_size else None} for m in UNCONVERTIBLE
    ]
    if args.json:
        print(json.dumps({"home": str(vfnet_home()), "models": rows, "unconvertible": unconvertible}, indent=2))
        return 0
    print(_table(rows))
    print(f"\ncache: {vfnet_home()}  (checkpoints/<file>, models/<name>.safetensors)")
    print("\npublished but not convertible by our presets (not pullable):")
    for m in unconvertible:
        extra = f" ({_ap(m['ap_test_dev'])} AP test-dev at {m['input_size'][0]}x{m['input_size'][1]})" if m["ap_test_dev"] is not None else ""
        print(f"  {m['name']}: {m['reason']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vfnet models` (the zoo's checkpoints, their presets and AP, what of them is already downloaded),
`vfnet pull` (download, verify, convert), and the --zoo / --mirror flags of every command that takes a model name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cache import checkpoint_path, converted_path, vfnet_home
from .catalog import UNCONVERTIBLE, ZOO_ENV, ZooEntry, ZooError, load_zoo, lookup
from .download import MIRROR_ENV
from .resolve import MODEL_SUFFIXES


def add_zoo_flags(parser: argparse.ArgumentParser) -> None:
    """--zoo and --mirror, for every command that takes a model name."""
    parser.add_argument("--zoo", metavar="FILE", default=None, help=f"a zoo file (JSON) adding to or replacing the built-in models (default: ${ZOO_ENV})")
    parser.add_argument(
        "--mirror",
        metavar="URL",
        default=None,
        help=f"download zoo models from this http(s):// or file:// base instead, keeping each URL's path below it (default: ${MIRROR_ENV})",
    )


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


def pull_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet pull",
        description="Download zoo models (streamed, resumable, SHA-256 checked against the prefix in the file name), convert "
        f"them to vfnet-serve checkpoints, and keep both in the cache ({vfnet_home()}; $VFNET_HOME moves it). A model "
        "already there is not downloaded again; concurrent pulls of one model download it once. A .pth file given "
        "instead of a name is verified the same way (when its name carries a hash) and converted.",
        epilog="examples:\n"
        "  vfnet pull vfnet_r50_fpn_mstrain_2x_coco                 # then: vfnet serve --model vfnet_r50_fpn_mstrain_2x_coco\n"
        "  vfnet pull vfnet_r50_fpn_ms-2x_coco --mirror http://10.0.0.5/openmmlab   # <mirror>/mmdetection/v2.0/vfnet/...\n"
        "  vfnet pull ~/Downloads/vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth      # downloaded elsewhere",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="NAME|FILE.pth", help="zoo names or aliases (`vfnet models`), or .pth files")
    add_zoo_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from .pull import pull, pull_file

    for model in args.models:
        try:
            if model.endswith(MODEL_SUFFIXES) or Path(model).is_file():
                pulled = pull_file(Path(model), zoo_file=args.zoo)
            else:
                pulled = pull(lookup(model, args.zoo), mirror=args.mirror, progress=not args.quiet)
        except ZooError as e:
            print(f"vfnet pull: {e}", file=sys.stderr)
            return 1
        print(f"{pulled.name}: {pulled.converted} (from {pulled.source.name}, SHA-256 {pulled.sha256[:16]}...)")
    if len(args.models) == 1:
        print(f"serve it: vfnet serve --model {pulled.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

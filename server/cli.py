"""The `vfnet` command: a thin dispatcher over subcommands that live in their own packages.

Each subcommand's module is imported only when that subcommand runs, so `vfnet serve` never imports
torch, `vfnet.train` or `vfnet.export`, and `vfnet --help` starts instantly.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function" taking argv and returning an exit code, one-line summary, group).
# The first group needs no torch (`pip install 'vfnet-serve[cpu]'`). `eval` runs the runtime like
# serve, but its code lives in vfnet.train beside the COCO-format reader it shares with training.
SERVE, MAKE = "serve and measure (no torch needed)", "make models (torch)"
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("vfnet.server.app.cli:main", "run the HTTP detection service (default: the bundled demo model)", SERVE),
    "loadtest": ("vfnet.server.loadtest:main", "load a running service (Locust) and check latency targets", SERVE),
    "eval": ("vfnet.train.cli:eval_main", "COCO metrics of a model on COCO-format data, through the runtime", SERVE),
    "data": ("vfnet.train.cli:data_main", "make a synthetic detection set in COCO format", SERVE),
    "convert-mmdet": ("vfnet.export.convert_cli:main", "official VFNet / mmdetection .pth -> vfnet-serve .safetensors", MAKE),
    "export": ("vfnet.export.cli:main", "checkpoint -> ONNX (fp32, fp16, int8, raw head outputs) or OpenVINO IR", MAKE),
    "train": ("vfnet.train.cli:train_main", "train a VFNet (ATSS, Varifocal Loss, GIoU) on COCO-format data", MAKE),
}

USAGE = "usage: vfnet <command> [options]   (vfnet <command> --help for each command's options and examples)\n" + "".join(
    f"\n{group}:\n" + "".join(f"  {name:<15} {summary}\n" for name, (_, summary, in_group) in COMMANDS.items() if in_group == group)
    for group in dict.fromkeys(group for _, _, group in COMMANDS.values())
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vfnet: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, function = COMMANDS[argv[0]][0].split(":")  # imported only now
    return getattr(importlib.import_module(module_name), function)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

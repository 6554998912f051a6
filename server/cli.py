"""The `vfnet` command: a thin dispatcher over subcommands that live in their own packages.

Each subcommand's module is imported only when that subcommand runs, so `vfnet serve` never imports
torch, `vfnet.train` or `vfnet.export`, and `vfnet --help` starts instantly.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function" taking argv and returning an exit code, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("vfnet.server.app.cli:main", "run the HTTP detection service (default: the bundled demo model)"),
    "loadtest": ("vfnet.server.loadtest:main", "load a running service (Locust) and check latency targets"),
    "convert-mmdet": ("vfnet.export.convert_cli:main", "official VFNet / mmdetection .pth -> vfnet-serve .safetensors"),
    "export": ("vfnet.export.cli:main", "checkpoint -> ONNX (detections or raw head outputs; fp32 or fp16)"),
    "data": ("vfnet.train.cli:data_main", "make a synthetic detection set in COCO format"),
    "train": ("vfnet.train.cli:train_main", "train a VFNet (ATSS, Varifocal Loss, GIoU) on COCO-format data"),
    "eval": ("vfnet.train.cli:eval_main", "COCO metrics of a model on COCO-format data, through the runtime"),
}

USAGE = "usage: vfnet <command> [options]   (vfnet <command> --help for each command's options)\n\ncommands:\n" + "\n".join(
    f"  {name:<15} {summary}" for name, (_, summary) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vfnet: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, function = COMMANDS[argv[0]][0].split(":")
    return getattr(importlib.import_module(module_name), function)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

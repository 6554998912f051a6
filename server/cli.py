"""The `vfnet` command: a thin dispatcher over subcommands that live in their own packages.

Each subcommand's module is imported only when that subcommand runs, so `vfnet serve` never imports
torch, `vfnet.train` or `vfnet.export`, and `vfnet --help` starts instantly.
"""

from __future__ import annotations

import sys

# Each command is a function that imports its module only when it runs; its docstring is its summary.


def serve(argv: list[str]) -> int:
    """run the HTTP detection service (default: the bundled demo model)"""
    from vfnet.server.app.cli import main

    return main(argv)


def loadtest(argv: list[str]) -> int:
    """load a running service (Locust) and check latency targets"""
    from vfnet.server.loadtest import main

    return main(argv)


def evaluate(argv: list[str]) -> int:
    """COCO metrics of a model on COCO-format data, through the runtime"""
    from vfnet.server.evaluate import main

    return main(argv)


def predict(argv: list[str]) -> int:
    """detections for many images and videos (folders, globs, lists, COCO files) to JSONL / COCO / Parquet; --ray for a cluster"""
    from vfnet.server.predict.cli import main

    return main(argv)


def models(argv: list[str]) -> int:
    """the official VFNet checkpoints (and a --zoo file's): presets, AP, what is downloaded"""
    from vfnet.server.zoo.cli import main

    return main(argv)


def pull(argv: list[str]) -> int:
    """download, verify and convert zoo models (or a .pth) into the cache; names then work as --model"""
    from vfnet.server.zoo.cli import pull_main

    return pull_main(argv)


def data(argv: list[str]) -> int:
    """make a synthetic detection set in COCO format"""
    from vfnet.train.cli import data_main

    return data_main(argv)


def convert_mmdet(argv: list[str]) -> int:
    """official VFNet / mmdetection .pth -> vfnet-serve .safetensors"""
    from vfnet.export.convert_cli import main

    return main(argv)


def export(argv: list[str]) -> int:
    """checkpoint -> ONNX (fp32, fp16, int8, raw head outputs) or OpenVINO IR; ONNX -> TensorRT engine"""
    from vfnet.export.cli import main

    return main(argv)


def train(argv: list[str]) -> int:
    """train a VFNet (ATSS, Varifocal Loss, GIoU) on COCO-format data"""
    from vfnet.train.cli import train_main

    return train_main(argv)


# The first group needs no torch (`pip install 'vfnet-serve[cpu]'`); the second makes models with it.
GROUPS = {
    "serve and measure (no torch needed)": {"serve": serve, "predict": predict, "loadtest": loadtest, "eval": evaluate, "data": data, "models": models},
    "make models (torch)": {"pull": pull, "convert-mmdet": convert_mmdet, "export": export, "train": train},
}
COMMANDS = {name: command for commands in GROUPS.values() for name, command in commands.items()}

USAGE = "usage: vfnet <command> [options]   (vfnet <command> --help for each command's options and examples)\n" + "".join(
    f"\n{group}:\n" + "".join(f"  {name:<15} {command.__doc__}\n" for name, command in commands.items()) for group, commands in GROUPS.items()
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vfnet: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

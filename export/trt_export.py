"""`vfnet export trt`: an ONNX file from `vfnet export onnx` -> a TensorRT engine plus its sidecar
(model card and manifest). No torch; TensorRT, cuda-python and a GPU are needed, and without them
the command says so in one line and exits 1."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vfnet.server.runtime import ModelCard, ModelLoadError
from vfnet.server.runtime.engine_cache import Profile, default_profile, read_sidecar, write_engine
from vfnet.server.runtime.tensorrt_build import build_engine, onnx_card, plugin_library, running_manifest


def chosen_profile(card: ModelCard, args: argparse.Namespace) -> Profile:
    """The default profile for --max-batch, with each flag given replacing its part."""
    base = default_profile(card, args.max_batch)
    changes = {"min_batch": args.min_batch, "opt_batch": args.opt_batch or args.max_batch}
    changes.update({f"{which}_canvas": getattr(args, f"{which}_canvas") for which in ("min", "opt", "max") if getattr(args, f"{which}_canvas")})
    divisor = card.size_divisor
    for name in ("min_canvas", "opt_canvas", "max_canvas"):
        if name in changes and any(side % divisor for side in changes[name]):
            raise ValueError(f"--{name.replace('_', '-')} {changes[name][0]}x{changes[name][1]}: both sides must be multiples of {divisor}")
    return dataclasses.replace(base, **changes)


def export_trt(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        card = onnx_card(args.onnx)
        profile = chosen_profile(card, args)
        plugins = plugin_library(card, args.plugin_lib)
        workspace = int(args.workspace * (1 << 30))
        manifest = running_manifest(args.onnx, card, profile, plugins, args.builder_optimization_level, workspace)

        def build(path: Path) -> None:
            build_engine(args.onnx, path, profile, plugins, args.timing_cache, workspace, args.builder_optimization_level, progress)

        engine = write_engine(args.out, card, manifest, build)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = engine.stat().st_size / 1e6
    built = read_sidecar(engine)[1]
    print(f"{engine}: {size:.1f} MB built in {built.build_seconds:.0f} s, TensorRT {built.tensorrt_version} on {built.gpu_name} "
          f"({built.compute_capability}), {card.precision}, images {profile.shapes()['min']} .. {profile.shapes()['max']}; "
          f"manifest {engine.name}.json")  # fmt: skip
    return 0

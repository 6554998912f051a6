"""`vfnet export trt`: an ONNX file from `vfnet export onnx` -> a TensorRT engine plus its sidecar
(model card and manifest). No torch; TensorRT, cuda-python and a GPU are needed, and without them
the command says so in one line and exits 1."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vfnet.server.runtime import ModelCard, ModelLoadError
from vfnet.server.runtime.engine_cache import Profile, default_profile, write_engine
from vfnet.server.runtime.tensorrt_build import build_engine, running_manifest


def read_card(onnx_path: Path) -> ModelCard:
    """The model card in an ONNX file's metadata (without loading its weights)."""
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path}: no such file")
    try:
        import onnx
    except ImportError:
        raise ModelLoadError("reading an ONNX file's model card needs onnx: pip install 'vfnet-serve[tensorrt]'") from None
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise ModelLoadError(f"{onnx_path}: not a readable ONNX file ({type(exc).__name__})") from None
    card = ModelCard.from_metadata({p.key: p.value for p in model.metadata_props}, source=str(onnx_path))
    if card.graph != "detections":
        raise ModelLoadError(f"{onnx_path}: a --raw graph (head outputs only); export the detections graph for an engine")
    return card


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


def plugin_library(card: ModelCard, given: Path | None) -> Path | None:
    if not card.plugins:
        return None
    if given is not None:
        if not given.is_file():
            raise ModelLoadError(f"--plugin-lib {given}: no such file")
        return given
    from vfnet.trt_plugins import PluginNotBuilt, library_path

    try:
        return library_path("vfnet_trt_plugins")
    except PluginNotBuilt as exc:
        raise ModelLoadError(f"the graph needs {', '.join(card.plugins)}: {exc}") from None


def export_trt(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        card = read_card(args.onnx)
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
    print(f"{engine}: {size:.1f} MB, TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} ({manifest.compute_capability}), "
          f"{card.precision}, images {profile.shapes()['min']} .. {profile.shapes()['max']}; manifest {engine.name}.json")  # fmt: skip
    return 0

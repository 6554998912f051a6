"""`vfnet export trt`: an ONNX file from `vfnet export onnx` -> a TensorRT engine plus its sidecar
(model card and manifest). No torch; TensorRT, cuda-python and a GPU are needed, and without them
ModelLoadError says so in one line. The builder and the engine files are the TensorRT backend's own
(vfnet.server.runtime.backends.tensorrt), so an engine made here is one `vfnet serve` accepts."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from vfnet.server.runtime.artifact import ModelCard
from vfnet.server.runtime.backends.tensorrt.build import BuilderSettings, build_engine, onnx_card, plugin_library, running_manifest
from vfnet.server.runtime.backends.tensorrt.cache import Profile, default_profile, write_engine


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


def export_trt(
    onnx: Path,
    out: Path,
    *,
    profile_for: Callable[[ModelCard], Profile] = default_profile,
    plugin_lib: Path | None = None,
    settings: BuilderSettings | None = None,
    progress=None,
) -> Path:
    """Build the engine of `onnx` for the profile `profile_for(card)` gives (default: batches 1..8,
    canvases up to the model's input size) with the builder `settings` (default BuilderSettings())
    into `out`, its sidecar beside it; returns `out`. A plugin graph needs `plugin_lib` or our built
    library. `progress(message)`, when given, receives step messages.
    Raises ModelLoadError (a graph TensorRT's parser would refuse: preflight.py; no TensorRT, no GPU,
    a bad file, a failed build) or ValueError (a profile the card does not allow)."""
    card = onnx_card(onnx)  # the pre-flight included
    profile = profile_for(card)
    plugins = plugin_library(card, plugin_lib)
    settings = settings or BuilderSettings()
    manifest = running_manifest(onnx, card, profile, plugins, settings)
    return write_engine(out, card, manifest, lambda path: build_engine(onnx, path, profile, plugins, settings, progress or (lambda message: None)))

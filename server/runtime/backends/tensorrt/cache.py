"""TensorRT engines as files: the shape profile, the manifest beside each engine, and the cache.

An engine is only valid for the TensorRT version, GPU (compute capability), ONNX file, plugin
library, precision, shape profile and builder settings it was built with. All of these are its
`Manifest`, written with the model card into a JSON sidecar `<engine>.json` (the artifact
contract's engine container, artifact.py):

    {"format": "vfnet-serve-engine", "card": {...model card metadata...}, "manifest": {...}}

The cache names each engine after the hash of its manifest (`EngineCache.key`), so a changed input
means another file, never a stale one. Builds write to a temporary file and rename it into place
(a reader never sees half an engine), under an exclusive file lock per key (two workers never build
the same engine twice: the second waits and then reuses the first's). An engine whose bytes do not
match the hash in its manifest is rebuilt, never loaded. No TensorRT is imported here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...artifact import ModelCard, ModelLoadError, read_engine_sidecar, sidecar_path, write_engine_sidecar


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile for `images` [B, 3, H, W]: batch and canvas (h, w) ranges.
    Canvases are multiples of the model's size divisor; the engine runs any shape inside the range
    and is fastest at `opt`."""

    min_batch: int
    opt_batch: int
    max_batch: int
    min_canvas: tuple[int, int]
    opt_canvas: tuple[int, int]
    max_canvas: tuple[int, int]

    def __post_init__(self):
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}, {self.opt_batch}, {self.max_batch}")
        for axis, name in ((0, "height"), (1, "width")):
            low, mid, high = self.min_canvas[axis], self.opt_canvas[axis], self.max_canvas[axis]
            if not (1 <= low <= mid <= high):
                raise ValueError(f"canvas {name} profile must satisfy 1 <= min <= opt <= max, got {low}, {mid}, {high}")

    def shapes(self) -> dict[str, tuple[int, int, int, int]]:
        """min / opt / max shapes of `images` [B, 3, H, W]."""
        return {
            "min": (self.min_batch, 3, *self.min_canvas),
            "opt": (self.opt_batch, 3, *self.opt_canvas),
            "max": (self.max_batch, 3, *self.max_canvas),
        }


def default_profile(card: ModelCard, max_batch_size: int = 8) -> Profile:
    """Batch 1..max_batch_size (optimised for the largest), canvases from one size-divisor cell up to
    the model's long side in both directions (landscape and portrait images), optimised for a
    landscape image filling the model's input (e.g. 800 x 1344 for the official presets)."""
    divisor = card.size_divisor
    long_side, short_side = card.input_size

    def padded(size: int) -> int:
        return -(-size // divisor) * divisor

    return Profile(
        min_batch=1,
        opt_batch=max_batch_size,
        max_batch=max_batch_size,
        min_canvas=(divisor, divisor),
        opt_canvas=(padded(short_side), padded(long_side)),
        max_canvas=(padded(long_side), padded(long_side)),
    )


@dataclass(frozen=True)
class Manifest:
    """What an engine was built from and for. `engine_sha256` and `build_seconds` describe the
    result and are not part of the cache key; everything else is."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # e.g. "sm_90"
    onnx_sha256: str
    plugin_sha256: str  # "" when the graph needs no plugin library
    precision: str  # the ONNX graph's: "fp32" or "fp16" (strongly typed networks)
    profile: Profile
    builder_optimization_level: int
    workspace_bytes: int
    tf32: bool = False  # float32 layers may multiply in TF32 (vfnet export trt --tf32); else fp32 means fp32
    engine_sha256: str = ""
    build_seconds: float = 0.0

    def key(self) -> str:
        """The cache key: a hash of every field that changes the engine."""
        fields = dataclasses.asdict(self)
        for result in ("engine_sha256", "build_seconds"):
            fields.pop(result)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str) -> Manifest:
        try:
            profile = data["profile"]
            # A manifest without "tf32" predates the field: its engine was built with TensorRT's default, TF32 on.
            return cls(**{"tf32": True, **data, "profile": Profile(**{k: tuple(v) if isinstance(v, list) else v for k, v in profile.items()})})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: a damaged engine manifest ({type(exc).__name__}: {exc})") from None


def mismatches(manifest: Manifest, running: Manifest) -> list[str]:
    """What differs between an engine's manifest and what this process would build (the running
    TensorRT and GPU, the files, the settings), each as 'field: engine has X, here Y'."""
    return [
        f"{field.name}: the engine has {getattr(manifest, field.name)!r}, here {getattr(running, field.name)!r}"
        for field in dataclasses.fields(Manifest)
        if field.name not in ("engine_sha256", "build_seconds") and getattr(manifest, field.name) != getattr(running, field.name)
    ]


def runtime_mismatches(manifest: Manifest, tensorrt_version: str, compute_capability: str, plugin_sha256: str = "") -> list[str]:
    """Why an engine cannot run in this process: another TensorRT, a GPU of another compute
    capability (TensorRT engines are tied to both), or, for a plugin graph, another plugin library
    than the one it was built with (`plugin_sha256`: the hash of the library this process loads).
    Empty when it can."""
    checks = [
        ("TensorRT", manifest.tensorrt_version, tensorrt_version),
        ("compute capability", manifest.compute_capability, compute_capability),
    ]
    if manifest.plugin_sha256:
        checks.append(("plugin library sha256", manifest.plugin_sha256[:16], plugin_sha256[:16]))
    return [f"{what}: the engine was built for {built}, this process has {here}" for what, built, here in checks if built != here]


def timing_cache_path(directory: Path, tensorrt_version: str, compute_capability: str) -> Path:
    """The builder's timing cache in `directory` (its contents are specific to TensorRT and GPU)."""
    return directory / f"timing-trt{tensorrt_version}-{compute_capability}.cache"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(engine: Path) -> tuple[ModelCard, Manifest]:
    """The card and manifest of `engine`; ModelLoadError saying what is missing or damaged."""
    card, manifest = read_engine_sidecar(engine)
    return card, Manifest.from_dict(manifest, source=str(sidecar_path(engine)))


class EngineCache:
    """Engines in `directory`, one per manifest key: `<name>-<key[:16]>.engine` plus its sidecar."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path_for(self, name: str, manifest: Manifest) -> Path:
        return self.directory / f"{name}-{manifest.key()[:16]}.engine"

    def valid(self, engine: Path, manifest: Manifest) -> bool:
        """Whether `engine` is complete and was built from exactly `manifest`'s inputs."""
        if not engine.is_file() or not sidecar_path(engine).is_file():
            return False
        try:
            _, stored = read_sidecar(engine)
        except ModelLoadError:
            return False
        return not mismatches(stored, manifest) and stored.engine_sha256 == sha256_file(engine)

    def get_or_build(
        self, name: str, card: ModelCard, manifest: Manifest, build: Callable[[Path], None], on_build: Callable[[Path], None] = lambda path: None
    ) -> tuple[Path, bool]:
        """The cached engine for `manifest`, built with `build(temporary_path)` when it is missing,
        stale or damaged. Returns (engine path, whether this call built it). `on_build(path)` is
        called before a build starts (to tell the user it takes minutes)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine = self.path_for(name, manifest)
        if self.valid(engine, manifest):
            return engine, False
        with engine.with_name(engine.name + ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process building this key: wait for it
            if self.valid(engine, manifest):
                return engine, False
            on_build(engine)
            return write_engine(engine, card, manifest, build), True


def write_engine(engine: Path, card: ModelCard, manifest: Manifest, build: Callable[[Path], None]) -> Path:
    """`build(temporary_path)`, then rename the result to `engine` and write its sidecar with the
    manifest completed (engine hash, build time). Nothing is left behind when the build fails."""
    engine.parent.mkdir(parents=True, exist_ok=True)
    temporary = engine.with_name(f".{engine.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    try:
        build(temporary)
        built = dataclasses.replace(manifest, engine_sha256=sha256_file(temporary), build_seconds=round(time.perf_counter() - started, 1))
        os.replace(temporary, engine)
    finally:
        temporary.unlink(missing_ok=True)
    write_engine_sidecar(engine, card, built.to_dict())
    return engine

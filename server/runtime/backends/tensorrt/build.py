"""Building TensorRT engines from our ONNX files (TensorRT 10.x and 11.x Python APIs; no torch).

Used by `vfnet export trt` and by the engine cache of `vfnet serve --backend tensorrt`
(`prepare_engine`, through the runtime's `open_model`). The network
is strongly typed: its precision is the ONNX graph's (`vfnet export onnx --fp16` for float16, since
TensorRT 11 has no fp16 builder flag). NMS comes through the parser's NonMaxSuppression import
(INMSLayer); DeformConv through TensorRT's own plugin library (ModulatedDeformConv2d), registered
before parsing. A plugin graph (`--plugin`) needs our plugin library, loaded into TensorRT's registry
before parsing and again before deserialising (the engine names the plugin, it does not carry it);
its hash is in the manifest, and the backend refuses another library.

TensorRT and cuda-python are imported only when a function here runs; without them, or without a
GPU, the functions raise ModelLoadError with one clear line.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...artifact import INPUTS, ModelCard, ModelLoadError, load_onnx, write_atomically
from ...artifact import onnx_card as card_of
from .cache import EngineCache, Manifest, Profile, default_profile, sha256_file, timing_cache_path
from .preflight import require_preflight

NO_TENSORRT = (
    "TensorRT is not installed here: it comes with NVIDIA's container (nvcr.io/nvidia/tensorrt) or NVIDIA's "
    "pip packages on a GPU host (see the README's 'Deploy on a GPU')"
)


# The default folder of the engines `vfnet serve --backend tensorrt --model M.onnx` builds.
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "vfnet-serve" / "engines"


def onnx_card(onnx_path: Path) -> ModelCard:
    """The model card of an ONNX file to build an engine from: a detections graph that passes the
    pre-flight (a graph TensorRT's parser would refuse is refused here, without TensorRT). The file
    is read once for both."""
    proto = load_onnx(onnx_path)
    card = card_of(proto, str(onnx_path))
    if card.graph != "detections":
        raise ModelLoadError(f"{onnx_path}: a --raw graph (head outputs only); export the detections graph for an engine")
    require_preflight(proto, source=str(onnx_path))
    return card


@dataclass(frozen=True)
class PluginLibrary:
    """A TensorRT plugin library and the creators a graph needs from it (by name; version "1",
    namespace "", as our StarDeformConv's)."""

    path: Path
    creators: tuple[str, ...]


def plugin_library(card: ModelCard, given: Path | None = None) -> PluginLibrary | None:
    """The TensorRT plugin library a plugin graph needs: `given`, else our built one; None for none."""
    if not card.plugins:
        return None
    if given is not None:
        if not given.is_file():
            raise ModelLoadError(f"--plugin-lib {given}: no such file")
        return PluginLibrary(given, card.plugins)
    from vfnet.trt_plugins import PluginNotBuilt, library_path

    try:
        return PluginLibrary(library_path("vfnet_trt_plugins"), card.plugins)
    except PluginNotBuilt as exc:
        raise ModelLoadError(f"the graph needs {', '.join(card.plugins)}: {exc}") from None


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ModelLoadError(NO_TENSORRT) from None
    return tensorrt


@functools.cache
def logger():
    """The process's one TensorRT logger (warnings and errors). It must outlive everything that was
    given it: libnvinfer_plugin keeps the logger `init_libnvinfer_plugins` receives, and the Python
    binding holds no reference to it, so a temporary one would be written through after it is freed."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


@functools.cache
def register_tensorrt_plugins() -> None:
    """Register TensorRT's own plugins (libnvinfer_plugin), once per process: the ONNX parser
    imports DeformConv as its ModulatedDeformConv2d plugin, and such an engine needs it to load."""
    if not import_tensorrt().init_libnvinfer_plugins(logger(), ""):
        raise ModelLoadError("TensorRT could not register its own plugins (libnvinfer_plugin); DeformConv needs them")


@functools.cache
def load_plugin_library(library: PluginLibrary) -> None:
    """Register the creators of a TensorRT plugin library, once per process (building an engine and
    then serving it both need it). Where every creator the graph needs is registered already (our
    register-at-load library came first, e.g. through ONNX Runtime's TensorRT provider), nothing is
    loaded: TensorRT refuses to register a creator twice."""
    registry = import_tensorrt().get_plugin_registry()
    # all_creators, not get_creator: TensorRT logs an error for every get_creator that misses
    present = {(creator.name, creator.plugin_version, creator.plugin_namespace) for creator in registry.all_creators}
    wanted = {(name, "1", "") for name in library.creators}
    if wanted <= present:
        return
    if wanted & present:
        names = sorted(name for name, _, _ in wanted & present)
        raise ModelLoadError(f"{library.path}: {', '.join(names)} registered already by another library; TensorRT refuses to register a creator twice")
    if registry.load_library(str(library.path)) is None:
        raise ModelLoadError(f"{library.path}: TensorRT could not load this plugin library")


def gpu() -> tuple[str, str]:
    """(name, "sm_XY") of CUDA device 0, read with cuda-python; ModelLoadError without a GPU."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python before 12.6
    except ImportError:
        raise ModelLoadError("cuda-python is not installed: pip install 'vfnet-serve[tensorrt]'") from None
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count < 1:
        raise ModelLoadError("no CUDA GPU is visible to this process (TensorRT engines are built and run on a GPU)")
    error, properties = cudart.cudaGetDeviceProperties(0)
    if int(error) != 0:
        raise ModelLoadError(f"cannot read the GPU's properties (cudaError {int(error)})")
    name = properties.name.decode(errors="replace").rstrip("\x00") if isinstance(properties.name, bytes) else str(properties.name)
    return name, f"sm_{properties.major}{properties.minor}"


@dataclass(frozen=True)
class BuilderSettings:
    """How TensorRT builds an engine, beside its profile and plugins: the workspace limit, the
    optimisation level and TF32 (these change the engine: they are in its manifest), and a timing
    cache file to read and update (which only speeds the build up)."""

    workspace_bytes: int = 4 << 30
    optimization_level: int = 3
    timing_cache: Path | None = None
    tf32: bool = False  # let float32 layers multiply in TF32 (TensorRT's default; off: fp32 means fp32)


def running_manifest(onnx_path: Path, card: ModelCard, profile: Profile, plugins: PluginLibrary | None, settings: BuilderSettings) -> Manifest:
    """The manifest an engine built here and now from these inputs would have."""
    tensorrt = import_tensorrt()
    gpu_name, capability = gpu()
    return Manifest(
        tensorrt_version=tensorrt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        onnx_sha256=sha256_file(onnx_path),
        plugin_sha256=sha256_file(plugins.path) if plugins else "",
        precision=card.precision,
        profile=profile,
        builder_optimization_level=settings.optimization_level,
        workspace_bytes=settings.workspace_bytes,
        tf32=settings.tf32,
    )


def build_engine(
    onnx_path: Path, out: Path, profile: Profile, plugins: PluginLibrary | None, settings: BuilderSettings, progress: Callable[[str], None]
) -> None:
    """Parse `onnx_path` into a strongly typed network, build it for `profile` with `settings` and
    write the serialised engine to `out`. Raises ModelLoadError naming what failed (parser errors
    included). `progress` receives step messages."""
    trt = import_tensorrt()
    register_tensorrt_plugins()
    if plugins is not None:
        load_plugin_library(plugins)
    builder = trt.Builder(logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger())
    progress(f"parsing {onnx_path} ...")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    if not settings.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: float32 layers would multiply in TF32
    shapes = profile.shapes()
    optimisation = builder.create_optimization_profile()
    images, image_sizes, _ = INPUTS
    optimisation.set_shape(images, shapes["min"], shapes["opt"], shapes["max"])
    optimisation.set_shape(image_sizes, (profile.min_batch, 2), (profile.opt_batch, 2), (profile.max_batch, 2))
    config.add_optimization_profile(optimisation)
    _use_timing_cache(config, settings.timing_cache, progress)
    config.progress_monitor = _progress_monitor(trt, progress)
    progress(f"building the engine for {shapes['min']} .. {shapes['max']} (this takes minutes) ...")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    if settings.timing_cache is not None:
        write_atomically(settings.timing_cache, bytes(config.get_timing_cache().serialize()))
    progress(f"built in {time.perf_counter() - started:.0f} s")


def _use_timing_cache(config, path: Path | None, progress: Callable[[str], None]) -> None:
    """Give the builder `path`'s timing cache (it skips timing what it already timed), or a new
    one when there is none or TensorRT refuses it (another TensorRT or GPU, or a damaged file)."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
        progress(f"{path}: a timing cache TensorRT cannot use here; starting a new one")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _progress_monitor(trt, progress: Callable[[str], None]):
    """A trt.IProgressMonitor that reports each top-level build phase and its steps."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                progress(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)

    return Monitor()


def prepare_engine(
    onnx_path: Path, cache_dir: Path, max_batch_size: int, tf32: bool = False, progress: Callable[[str], None] = lambda message: None
) -> tuple[ModelCard, Path, Callable[[], None] | None]:
    """For `vfnet serve --backend tensorrt --model M.onnx`: (card, engine path, build) where build is
    None when the cache already holds a valid engine for this TensorRT, GPU, file, profile and TF32
    choice, else the function that builds it (minutes). Fast and strict: no TensorRT, no GPU or a bad
    file raise ModelLoadError here, before the server starts."""
    card = onnx_card(onnx_path)
    profile = default_profile(card, max_batch_size)
    plugins = plugin_library(card)
    settings = BuilderSettings(tf32=tf32)  # the defaults, and a timing cache beside the engines
    manifest = running_manifest(onnx_path, card, profile, plugins, settings)
    cache = EngineCache(cache_dir)
    engine = cache.path_for(onnx_path.stem, manifest)
    if cache.valid(engine, manifest):
        return card, engine, None

    timing_cache = timing_cache_path(cache_dir, manifest.tensorrt_version, manifest.compute_capability)

    def build() -> None:
        cache.get_or_build(
            onnx_path.stem,
            card,
            manifest,
            lambda temporary: build_engine(onnx_path, temporary, profile, plugins, dataclasses.replace(settings, timing_cache=timing_cache), progress),
        )

    return card, engine, build

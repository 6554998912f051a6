"""The model card: what a served artifact is, written in one place and read in one place.

An ONNX export keeps the card in its `metadata_props`, an OpenVINO IR in its rt_info (`vfnet_serve`),
a TensorRT engine in a JSON sidecar, and a torch checkpoint's card is built from the configuration in its header. Every value
is a string in the metadata: numbers as Python writes them, tuples as JSON lists.

    format           "vfnet-serve" (what marks the file as ours; not a card field)
    graph            "detections" (the inference contract) or "raw" (head outputs, for parity tests)
    precision        "fp32", "fp16" or "int8" (int8 convolutions, the rest float32): the arithmetic of the graph
    preset           e.g. "vfnet_r18_demo"
    class_names      JSON list, index = class id
    input_size       JSON [long, short]: keep-ratio fit, long side <= long, short side <= short
    size_divisor     images are zero-padded to a multiple of this
    max_detections   K: the most detections per image the model returns
    score_threshold  the score floor inside the model (lower request thresholds act as this)
    iou_threshold    the default class-aware NMS IoU threshold
    pixel_mean/std   JSON [r, g, b]: the normalisation inside the graph (informational)
    version          the vfnet-serve version that wrote the file
    plugins          JSON list of the custom operators the graph needs, e.g. ["StarDeformConv"] for a
                     `--plugin` export (TensorRT plugins, domain trt.plugins); [] or absent: none
    score            what the scores are: "iacs" (VFNet's IoU-aware classification score; absent means
                     this) or "cls_x_centerness" (sigmoid(cls) * sigmoid(centerness): the ablation's
                     FCOS/ATSS variant)

How a card was loaded (backend, device, source file) is not a fact of the artifact: that is `Loaded`.
Boxes are always xyxy; the model returns them in resized-image pixels, the runtime in original ones.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass

FORMAT = "vfnet-serve"
GRAPHS = ("detections", "raw")
PRECISIONS = ("fp32", "fp16", "int8")
SCORES = ("iacs", "cls_x_centerness")


class ModelLoadError(ValueError):
    """A model file that cannot be served; the message says why."""


@dataclass(frozen=True)
class ModelCard:
    """The facts of one model artifact (see the module docstring for each field)."""

    preset: str
    class_names: tuple[str, ...]
    precision: str
    input_size: tuple[int, int]
    size_divisor: int
    max_detections: int
    score_threshold: float
    iou_threshold: float
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    version: str
    graph: str = "detections"
    plugins: tuple[str, ...] = ()
    score: str = "iacs"

    def __post_init__(self):
        problems = []
        if self.score not in SCORES:
            problems.append(f"score {self.score!r} is not one of {', '.join(SCORES)}")
        if self.graph not in GRAPHS:
            problems.append(f"graph {self.graph!r} is not one of {', '.join(GRAPHS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not self.class_names or not all(isinstance(name, str) and name for name in self.class_names):
            problems.append("class_names must be a non-empty list of non-empty names")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            problems.append(f"input_size {list(self.input_size)} must be two positive sizes")
        if self.size_divisor < 1 or self.max_detections < 1:
            problems.append("size_divisor and max_detections must be at least 1")
        if not (0.0 <= self.score_threshold <= 1.0 and 0.0 <= self.iou_threshold <= 1.0):
            problems.append("score_threshold and iou_threshold must lie in [0, 1]")
        if problems:
            raise ModelLoadError("model card: " + "; ".join(problems))

    @classmethod
    def from_config(
        cls, config, preset: str, class_names, precision: str, version: str, graph: str = "detections", plugins: tuple[str, ...] = ()
    ) -> ModelCard:
        """The card of a model built from `config` (a vfnet.model VFNetConfig, read by attribute)."""
        return cls(
            preset=preset,
            class_names=tuple(class_names),
            precision=precision,
            input_size=tuple(config.input_size),
            size_divisor=config.size_divisor,
            max_detections=config.max_detections,
            score_threshold=config.score_threshold,
            iou_threshold=config.iou_threshold,
            pixel_mean=tuple(config.pixel_mean),
            pixel_std=tuple(config.pixel_std),
            version=version,
            graph=graph,
            plugins=tuple(plugins),
            score="cls_x_centerness" if config.centerness else "iacs",
        )

    def to_metadata(self) -> dict[str, str]:
        """The card as string metadata, `format` first; `from_metadata` reads it back."""
        return {"format": FORMAT, **{name: _encode(value) for name, value in dataclasses.asdict(self).items()}}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> ModelCard:
        """Read the card `to_metadata` wrote; ModelLoadError naming missing, unknown or bad keys."""
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"{source}: not exported by vfnet-serve (no format={FORMAT} metadata)")
        hints = typing.get_type_hints(cls)
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(meta))
        unknown = sorted(set(meta) - set(hints) - {"format"})
        if missing or unknown:
            said = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(unknown)}"] * bool(unknown)
            raise ModelLoadError(f"{source}: its vfnet-serve metadata does not fit this version's model card: {'; '.join(said)} (written by another vfnet-serve version? export it again with this one)")
        values = {}
        for name, text in meta.items():
            if name == "format":
                continue
            try:
                values[name] = _decode(hints[name], text)
            except (ValueError, TypeError) as exc:
                raise ModelLoadError(f"{source}: metadata {name}={text!r}: expected {_describe(hints[name])} ({exc})") from None
        try:
            return cls(**values)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class Loaded:
    """How a card's artifact was loaded: the backend that runs it, on which device, in which
    arithmetic, from which file."""

    backend: str  # one of backends.BACKEND_NAMES (or a test's own)
    device: str  # "cpu" or "cuda"
    precision: str  # what the backend computes in: the card's precision, or "bf16" (OpenVINO on an fp32 IR)
    source: str  # the file it was loaded from


def _encode(value) -> str:
    return json.dumps(list(value)) if isinstance(value, tuple) else str(value)


def _decode(hint, text: str):
    """One metadata string as the card field type `hint` (str, int, float or a tuple of them)."""
    if typing.get_origin(hint) is not tuple:
        return hint(text)
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("not a JSON list")
    kinds = typing.get_args(hint)
    if kinds[-1] is Ellipsis:
        kinds = (kinds[0],) * len(items)
    if len(items) != len(kinds):
        raise ValueError(f"{len(items)} items, expected {len(kinds)}")
    for item, kind in zip(items, kinds):
        if not isinstance(item, kind) and not (kind is float and isinstance(item, int)) or isinstance(item, bool):
            raise TypeError(f"item {item!r} is not a {kind.__name__}")
    return tuple(kind(item) for item, kind in zip(items, kinds))


def _describe(hint) -> str:
    if typing.get_origin(hint) is not tuple:
        return hint.__name__
    kinds = typing.get_args(hint)
    return f"JSON list of {kinds[0].__name__}" + ("" if kinds[-1] is Ellipsis else f" ({len(kinds)} items)")

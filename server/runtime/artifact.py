"""The artifact contract, in one room: the tensors every served artifact computes, and its model card.

Every artifact we serve (an ONNX file, an OpenVINO IR, a TensorRT engine, a checkpoint) computes the
one inference contract, under these tensor names (nothing else in the project spells them):

    inputs   images          uint8   [B, 3, H, W]  RGB, keep-ratio resized, zero-padded to size_divisor
             image_sizes     int64   [B, 2]        (h, w) of each image's resized, unpadded content
             iou_threshold   float32 [1]           class-aware NMS IoU threshold
    outputs  boxes           float32 [B, K, 4]     xyxy in resized-image pixels
             scores          float32 [B, K]        the IACS (or the card's `score`), best first
             labels          int64   [B, K]        class ids; -1 pads rows past num_detections
             num_detections  int64   [B]

and carries its model card: what the artifact is, written and read only here, in every container:

    ONNX             the file's metadata_props (write_onnx_card, read_onnx_card; ONNX Runtime's
                     custom_metadata_map holds the same strings: ModelCard.from_metadata)
    OpenVINO IR      the model's rt_info under `vfnet_serve` (write_openvino_card, read_openvino_card)
    TensorRT engine  a JSON sidecar <engine>.json beside it, with the engine's build manifest
                     (write_engine_sidecar, read_engine_sidecar)
    checkpoint       built from the model's configuration (model_card)

Every value is a string in the metadata: numbers as Python writes them, tuples as JSON lists.

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

How a card's artifact was loaded (backend, device, source file) is not a fact of the artifact: that
is `detector.Loaded`. Boxes are always xyxy; the model returns them in resized-image pixels, the
runtime in original ones. Nothing here imports torch or a backend library at module level.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import Batch, make_batch, prepare_image

INPUTS = ("images", "image_sizes", "iou_threshold")
OUTPUTS = ("boxes", "scores", "labels", "num_detections")

FORMAT = "vfnet-serve"
OPENVINO_CARD_KEY = "vfnet_serve"  # the IR's rt_info section that holds the card
SIDECAR_FORMAT = "vfnet-serve-engine"
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
            raise ModelLoadError(
                f"{source}: its vfnet-serve metadata does not fit this version's model card: {'; '.join(said)} (written by another vfnet-serve version? export it again with this one)"
            )
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


def graph_inputs(batch: Batch, iou_threshold: float) -> dict[str, np.ndarray]:
    """The inputs every backend hands its library, by name: images uint8 [B, 3, H, W], image_sizes
    int64 [B, 2], iou_threshold float32 [1]."""
    values = (batch.images, batch.image_sizes.astype(np.int64, copy=False), np.array([iou_threshold], dtype=np.float32))
    return dict(zip(INPUTS, values))


def image_inputs(image: bytes, card: ModelCard) -> dict[str, np.ndarray]:
    """The inputs the graph of `card` gets for one encoded image, through the one pre-processing
    (decode, keep-ratio resize, pad), with the card's own IoU threshold: what calibration feeds."""
    prepared = prepare_image(image, card.input_size, card.size_divisor, max_pixels=None)
    return graph_inputs(make_batch([prepared], card.size_divisor), card.iou_threshold)


def check_tensor_names(source: str, inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """ModelLoadError unless a loaded graph's input and output names are the contract's (any order)."""
    inputs, outputs = list(inputs), list(outputs)
    if set(inputs) != set(INPUTS) or set(outputs) != set(OUTPUTS):
        raise ModelLoadError(f"{source}: inputs {inputs} and outputs {outputs}, expected {list(INPUTS)} and {list(OUTPUTS)}")


def model_card(model, precision: str, version: str, graph: str = "detections", plugins: tuple[str, ...] = ()) -> ModelCard:
    """The card of a vfnet.model VFNet (read by attribute: its config, preset and class names).
    version: the vfnet-serve that wrote the artifact (an export: vfnet.model's project_version())."""
    config = model.config
    return ModelCard(
        preset=model.preset,
        class_names=tuple(model.class_names),
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


# ONNX: the card is the file's metadata_props.


def write_onnx_card(proto, card: ModelCard) -> None:
    """Make `card` the metadata of `proto` (an onnx.ModelProto), replacing whatever was there."""
    import onnx

    del proto.metadata_props[:]
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=key, value=value) for key, value in card.to_metadata().items())


def onnx_card(proto, source: str) -> ModelCard:
    """The card in `proto`'s metadata (an onnx.ModelProto)."""
    return ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props}, source=source)


def read_onnx_card(path: Path) -> ModelCard:
    """The card of an ONNX file, read with the onnx package without loading external weights."""
    return onnx_card(load_onnx(path), str(path))


def load_onnx(path: Path):
    """An ONNX file as an onnx.ModelProto (external weights not loaded); ModelLoadError naming the problem."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        import onnx
    except ImportError:
        raise ModelLoadError("reading an ONNX file's model card needs onnx: pip install 'vfnet-serve[tensorrt]'") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise ModelLoadError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return proto


# OpenVINO: the card is a section of the IR's rt_info.


def write_openvino_card(model, card: ModelCard) -> None:
    """Keep `card` in `model`'s rt_info (an openvino.Model, saved with it)."""
    for key, value in card.to_metadata().items():
        model.set_rt_info(value, [OPENVINO_CARD_KEY, key])


def read_openvino_card(model, source: str) -> ModelCard:
    """The card in `model`'s rt_info (an openvino.Model read from an IR)."""
    section = [OPENVINO_CARD_KEY]
    meta = {key: str(value) for key, value in model.get_rt_info(section).value.items()} if model.has_rt_info(section) else {}
    return ModelCard.from_metadata(meta, source=source)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see all or nothing."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# TensorRT: an engine carries no metadata; the card and the build manifest go in a JSON sidecar.


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_engine_sidecar(engine: Path, card: ModelCard, manifest: dict) -> Path:
    """`{"format", "card", "manifest"}` beside `engine`, written atomically (a temporary file renamed)."""
    path = sidecar_path(engine)
    write_atomically(path, json.dumps({"format": SIDECAR_FORMAT, "card": card.to_metadata(), "manifest": manifest}, indent=2).encode())
    return path


def read_engine_sidecar(engine: Path) -> tuple[ModelCard, dict]:
    """The card and the manifest (as written) of `engine`; ModelLoadError saying what is missing or damaged."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelLoadError(f"{engine}: no manifest {path.name} beside it (engines are made by `vfnet export trt`, which writes both)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ModelLoadError(f"{path}: not a vfnet-serve engine manifest (no format={SIDECAR_FORMAT})")
    return ModelCard.from_metadata(data.get("card") or {}, source=str(path)), data.get("manifest") or {}


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

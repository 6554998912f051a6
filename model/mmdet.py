"""Import official VFNet / mmdetection checkpoints (`.pth`) into our safetensors format.

Reading never executes code from the file (`safe_pickle.safe_torch_load`): `torch.load(weights_only=True)`
only rebuilds tensors and plain containers, and the few other globals real mmdetection 2.x / mmengine
checkpoints reference (`message_hub` history buffers, numpy values, `builtins.getattr` on a history
buffer's methods) are inert stand-ins; any other global -- `os.system`, `builtins.eval`, ... -- makes
us refuse the file, naming it.

The weights come from `state_dict`, or with `ema=True` from mmengine's `ema_state_dict` (`module.`
prefix stripped). The preset is read off the keys and shapes: block count and type of `layer3`
(depth), the grouped 3x3 conv of `layer1.0` (ResNeXt groups and width), `conv_offset` keys (DCNv2),
and `vfnet_cls` (number of classes).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_state_dict_strict, save_checkpoint
from .detector import VFNet
from .presets import PRESETS, build_vfnet
from .safe_pickle import safe_torch_load

__all__ = ["convert_mmdet", "detect_preset", "key_summary", "safe_torch_load"]


def _state_dict_and_classes(checkpoint: object, path: Path, ema: bool = False) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a VFNet checkpoint (the file holds a {type(checkpoint).__name__}, not a dict)")
    if ema:
        state = checkpoint.get("ema_state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: --ema-state-dict: the file has no EMA weights ('ema_state_dict'); its keys: {', '.join(map(str, checkpoint))}")
        # mmengine's averaged model: `module.<key>` per weight, plus its own `steps` counter
        state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str) and k.startswith("module.")}
        if not state:
            raise CheckpointError(f"{path}: --ema-state-dict: 'ema_state_dict' holds no module.* weights")
    else:
        state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a VFNet checkpoint ('state_dict' is a {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = meta.get("CLASSES", dataset_meta.get("classes"))  # mmdet 2.x, then mmdet 3.x
    if classes is not None and not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: class names in the metadata are not a list of strings")
    return state, list(classes) if classes is not None else None


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered children under `prefix` (e.g. 'backbone.layer3.' -> blocks in layer3)."""
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix) and k[len(prefix)].isdigit()}
    return max(indices) + 1 if indices else 0


def key_summary(state: dict[str, torch.Tensor], limit: int = 12) -> str:
    """What a state dict holds, for an error: tensors per module, the head's by layer, e.g.
    "backbone.* 265, neck.* 16, bbox_head.atss_cls.* 2, bbox_head.atss_centerness.* 2, ..."
    """
    if not state:
        return "no tensors at all"
    groups = Counter(".".join(k.split(".")[:2]) if k.startswith(("bbox_head.", "rpn_head.", "roi_head.")) else k.split(".")[0] for k in state)
    shown = [f"{group}.* {count}" for group, count in list(groups.items())[:limit]]
    return ", ".join(shown) + (f", and {len(groups) - limit} more groups" if len(groups) > limit else "")


def detect_preset(state: dict[str, torch.Tensor]) -> tuple[str, dict]:
    """(preset name, VFNetConfig overrides) that fit the keys and shapes of an official state dict."""
    if "bbox_head.vfnet_cls.weight" not in state or "bbox_head.vfnet_reg_refine.weight" not in state:
        raise CheckpointError(f"not a VFNet checkpoint: no bbox_head.vfnet_cls / vfnet_reg_refine weights; it holds {key_summary(state)}")
    if "backbone.layer1.0.conv2.weight" not in state:
        raise CheckpointError("unsupported backbone: no ResNet keys (backbone.layer1.0.conv2.weight); pass --preset")
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    blocks = [_count(state, f"backbone.layer{i}.") for i in (1, 2, 3, 4)]
    depth = {(False, 2, 2, 2, 2): 18, (False, 3, 4, 6, 3): 34, (True, 3, 4, 6, 3): 50, (True, 3, 4, 23, 3): 101}.get((bottleneck, *blocks))
    width, width_per_group = state["backbone.layer1.0.conv2.weight"].shape[:2]
    stacked = _count(state, "bbox_head.cls_convs.")
    structure = dict(
        depth=depth,
        groups=int(width // width_per_group) if bottleneck else 1,
        width_per_group=int(width_per_group) if bottleneck else 64,
        dcn_stages=tuple(f"backbone.layer{i}.0.conv2.conv_offset.weight" in state for i in (1, 2, 3, 4)),
        dcn_on_last_conv=f"bbox_head.cls_convs.{stacked - 1}.conv.conv_offset.weight" in state,
    )
    candidates = [name for name, cfg in PRESETS.items() if all(getattr(cfg, k) == v for k, v in structure.items())]
    if depth is None or not candidates:
        raise CheckpointError(f"no preset has this backbone ({structure}); pass --preset")
    preset = candidates[0]
    cls_weight = state["bbox_head.vfnet_cls.weight"]
    found = dict(
        num_classes=int(cls_weight.shape[0]),
        feat_channels=int(cls_weight.shape[1]),
        fpn_channels=int(state["neck.lateral_convs.0.conv.weight"].shape[0]) if "neck.lateral_convs.0.conv.weight" in state else None,
        stacked_convs=stacked,
    )
    return preset, {k: v for k, v in found.items() if v is not None and getattr(PRESETS[preset], k) != v}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def convert_mmdet(src: str | Path, dst: str | Path, preset: str | None = None, fp16: bool = False, ema: bool = False) -> VFNet:
    """Convert an official / mmdetection 2.x or 3.x VFNet checkpoint; returns the loaded model.

    With `ema`, the weights are read from the file's `ema_state_dict` (mmengine EMAHook; an error if
    absent) instead of `state_dict`. Note that mmengine's EMAHook swaps the two when saving, so in its
    files `state_dict` already holds the averaged weights and `ema_state_dict` the raw training ones.

    The checkpoint's metadata records the source file's name and SHA-256 (`converted_from`, `source_sha256`).

    Raises CheckpointError (with the missing / unexpected keys and shape mismatches) when the
    weights do not fit. Without `preset`, it is detected from the keys and shapes; with it, only the
    class count is taken from the file.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    state, class_names = _state_dict_and_classes(safe_torch_load(src), src, ema=ema)
    if preset is None:
        try:
            preset, overrides = detect_preset(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{src}: {exc}") from None
    elif "bbox_head.vfnet_cls.weight" in state:
        overrides = {"num_classes": int(state["bbox_head.vfnet_cls.weight"].shape[0])}
    else:
        raise CheckpointError(f"{src}: not a VFNet checkpoint: no bbox_head.vfnet_cls weights; it holds {key_summary(state)}")
    try:
        model = build_vfnet(preset, **overrides)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if class_names is not None and len(class_names) != model.config.num_classes:
        raise CheckpointError(f"{src}: meta lists {len(class_names)} classes but vfnet_cls predicts {model.config.num_classes}")
    if class_names is not None:
        model.class_names = tuple(class_names)
    load_state_dict_strict(model, state, source=str(src))
    provenance = {"converted_from": src.name, "source_sha256": _sha256(src)}
    save_checkpoint(model, dst, dtype=torch.float16 if fp16 else torch.float32, extra=provenance)
    return model

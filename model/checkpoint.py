"""Our checkpoint format: one safetensors file, official parameter names, metadata in the header.

Metadata (all strings): `format` = "vfnet-serve", `format_version`, `preset`, `config` (the whole
VFNetConfig as JSON), `class_names` (JSON list), `version` (vfnet-serve that wrote it), plus any
`extra` entries the caller adds (for example how the weights were trained). Nothing in the file is
executable: safetensors holds raw tensors, and the metadata is parsed as JSON.
"""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import VFNetConfig
from .detector import VFNet

FORMAT = "vfnet-serve"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def project_version() -> str:
    try:
        return importlib_metadata.version("vfnet-serve")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def save_checkpoint(
    model: VFNet,
    path: str | Path,
    class_names: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write `model` to `path` (safetensors). Floating tensors are stored as `dtype` (float16 halves
    the file; loading always gives float32). `class_names` defaults to `model.class_names`."""
    names = list(model.class_names if class_names is None else class_names)
    if len(names) != model.config.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model.config.num_classes} classes")
    tensors = {key: (value.to(dtype) if value.is_floating_point() else value).detach().contiguous().cpu() for key, value in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "preset": model.preset,
        "config": model.config.to_json(),
        "class_names": json.dumps(names),
        "version": project_version(),
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of one of our checkpoints, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a vfnet-serve checkpoint (no format={FORMAT} metadata)")
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> VFNet:
    """Rebuild the model described by the checkpoint's metadata and load its weights strictly.

    Returns the model in eval mode, float32, on `map_location`; `.preset`, `.class_names` and
    `.config` come from the file.
    """
    meta = read_checkpoint_metadata(path)
    try:
        config = VFNetConfig.from_json(meta["config"])
        class_names = json.loads(meta["class_names"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged metadata ({exc})") from None
    model = VFNet(config, preset=meta.get("preset", "custom"), class_names=class_names)
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        state = {key: f.get_tensor(key) for key in f.keys()}
    load_state_dict_strict(model, state, source=str(path))
    return model.to(map_location).eval()


def load_state_dict_strict(model: VFNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, or raise CheckpointError listing every missing key, unexpected
    key and shape mismatch. Floating tensors are cast to the model's dtype."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source}: the weights do not fit preset {model.preset!r}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)

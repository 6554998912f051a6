"""A model argument, a file or a zoo name, as the file a command reads.

    checkpoint_file("vfnet_r50_fpn_1x_coco")          # pulled on first use: models/<name>.safetensors
    served_file("vfnet_r50_fpn_1x_coco", "auto")       # and exported once: exports/<name>/<key>.onnx
    served_file("vfnet_r50.onnx", "auto")              # a file is itself

A name is pulled (`pull.py`) the first time; what a backend reads is then exported once into
$VFNET_HOME/exports/<name>/, keyed like the TensorRT engine cache by what decides its content: the
source checkpoint's SHA-256, the export target and precision, and the vfnet-serve version. The
torch backend reads the converted checkpoint, OpenVINO an IR, every other backend (ONNX Runtime;
TensorRT builds its engine from it) the ONNX file. A later start finds the export and imports no
torch; only the first use of a name needs torch (and, for OpenVINO, the [export] extra).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from .cache import vfnet_home
from .catalog import ZooError, lookup
from .pull import Pulled, pull, say_on_stderr

# What our commands read or convert; an argument with one of these suffixes is a path, never a name.
MODEL_SUFFIXES = (".safetensors", ".onnx", ".xml", ".engine", ".pth")


def is_model_name(text: str) -> bool:
    """True for a zoo name: no such file, no folder separator, none of our model files' suffixes."""
    return not Path(text).exists() and "/" not in text and os.sep not in text and not text.endswith(MODEL_SUFFIXES)


def _pulled(name: str, zoo_file, mirror, progress: bool, say) -> Pulled:
    return pull(lookup(name, zoo_file), mirror=mirror, progress=progress, say=say)


def checkpoint_file(
    text: str, *, zoo_file: str | None = None, mirror: str | None = None, progress: bool = True, say: Callable[[str], None] = say_on_stderr
) -> Path:
    """`text` as a path, or the converted checkpoint of the zoo model it names (pulled on first use)."""
    if not is_model_name(text):
        return Path(text)
    return _pulled(text, zoo_file, mirror, progress, say).converted


def served_file(
    text: str, backend: str, *, zoo_file: str | None = None, mirror: str | None = None, progress: bool = True, say: Callable[[str], None] = say_on_stderr
) -> Path:
    """`text` as a path, or for a zoo name the file `backend` reads (pulled and exported on first use)."""
    if not is_model_name(text):
        return Path(text)
    pulled = _pulled(text, zoo_file, mirror, progress, say)
    if backend == "torch":
        return pulled.converted
    return cached_export(pulled, "openvino" if backend == "openvino" else "onnx", say)


def _version() -> str:
    try:
        return metadata.version("vfnet-serve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def cached_export(pulled: Pulled, target: str, say: Callable[[str], None] = say_on_stderr) -> Path:
    """The float32 `target` ("onnx" or "openvino") export of a pulled model, made once: a file
    exports/<name>/<sha256[:16]>-onnx-fp32-<version>.onnx, or that key's folder with model.xml."""
    key = f"{pulled.sha256[:16]}-{target}-fp32-{_version()}"
    folder = vfnet_home() / "exports" / pulled.name
    final = folder / f"{key}.onnx" if target == "onnx" else folder / key
    made = final if target == "onnx" else final / "model.xml"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{key}.lock")):
        if made.is_file():
            return made
        say(f"exporting {pulled.name} to {target} once, into {final} (a minute or more) ...")
        temporary = folder / f".{key}.{os.getpid()}.tmp"
        try:
            _export(pulled.converted, target, temporary)
            os.replace(temporary, final)
        except OSError as e:
            raise ZooError(f"cannot write the export of {pulled.name} into {folder}: {e.strerror or e}") from None
        finally:
            shutil.rmtree(temporary, ignore_errors=True) if temporary.is_dir() else temporary.unlink(missing_ok=True)
    return made


def _export(checkpoint: Path, target: str, out: Path) -> None:
    """`vfnet export onnx|openvino --weights checkpoint --out out` with default options."""
    try:
        from vfnet.model import load_checkpoint

        if target == "onnx":
            from vfnet.export.onnx_export import export_onnx as export
        else:
            import openvino  # noqa: F401  (an error here names what to install)

            from vfnet.export.openvino_export import export_openvino as export
    except ImportError as e:
        extra = "export,openvino" if target == "openvino" else "export"
        raise ZooError(f"the first use of a zoo name exports it, which needs {e.name}: pip install 'vfnet-serve[{extra}]'") from None
    export(load_checkpoint(checkpoint), out)

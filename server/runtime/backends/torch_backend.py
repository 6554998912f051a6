"""PyTorch backend: runs a vfnet-serve checkpoint with the reference model (imports torch lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_card import ModelCard, ModelLoadError


class TorchBackend:
    """Serves a `.safetensors` checkpoint with `vfnet.model`. device: "auto" (CUDA if available), "cuda", "cpu".
    intra_op_threads / inter_op_threads set torch's thread pools (process-wide; the inter-op pool
    only before torch has run anything in this process)."""

    name = "torch"

    def __init__(self, path: Path, device: str = "auto", intra_op_threads: int | None = None, inter_op_threads: int | None = None):
        try:
            import torch

            from vfnet.model import CheckpointError, load_checkpoint, read_checkpoint_metadata
        except ImportError:
            raise ModelLoadError("the torch backend needs torch: pip install 'vfnet-serve[torch]'") from None
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("device cuda requested, but torch sees no CUDA GPU")
        self.torch_device = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        self.device = self.torch_device.type
        if intra_op_threads is not None:
            torch.set_num_threads(intra_op_threads)
        if inter_op_threads is not None:
            try:
                torch.set_num_interop_threads(inter_op_threads)
            except RuntimeError as exc:  # torch allows it once, before any parallel work
                raise ModelLoadError(f"inter_op_threads: {exc}") from None
        try:
            version = read_checkpoint_metadata(path).get("version", "unknown")
            self.model = load_checkpoint(path, map_location=self.torch_device)
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from None
        self._torch = torch
        precision = "fp16" if next(self.model.parameters()).dtype == torch.float16 else "fp32"
        self.card = ModelCard.from_config(self.model.config, self.model.preset, self.model.class_names, precision, version)
        self.precision = precision

    def run(self, images: np.ndarray, image_sizes: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, ...]:
        torch = self._torch
        with torch.inference_mode():
            detections = self.model(
                torch.from_numpy(images).to(self.torch_device),
                torch.from_numpy(image_sizes.astype(np.int64, copy=False)).to(self.torch_device),
                torch.tensor([iou_threshold], dtype=torch.float32),
            )
        return tuple(t.cpu().numpy() for t in detections)

"""PyTorch backend: runs a vfnet-serve checkpoint with the reference model (imports torch lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_info import ModelInfo, ModelLoadError


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
        self.device = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        if intra_op_threads is not None:
            torch.set_num_threads(intra_op_threads)
        if inter_op_threads is not None:
            try:
                torch.set_num_interop_threads(inter_op_threads)
            except RuntimeError as exc:  # torch allows it once, before any parallel work
                raise ModelLoadError(f"inter_op_threads: {exc}") from None
        try:
            version = read_checkpoint_metadata(path).get("version", "unknown")
            self.model = load_checkpoint(path, map_location=self.device)
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from None
        self._torch = torch
        c = self.model.config
        self.info = ModelInfo(
            class_names=self.model.class_names,
            preset=self.model.preset,
            backend=self.name,
            device=self.device.type,
            precision="fp32",
            input_size=tuple(c.input_size),
            size_divisor=c.size_divisor,
            max_detections=c.max_detections,
            score_threshold=c.score_threshold,
            iou_threshold=c.iou_threshold,
            version=version,
            source=str(path),
        )

    def run(self, images: np.ndarray, image_sizes: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, ...]:
        torch = self._torch
        with torch.inference_mode():
            detections = self.model(
                torch.from_numpy(images).to(self.device),
                torch.from_numpy(image_sizes.astype(np.int64, copy=False)).to(self.device),
                torch.tensor([iou_threshold], dtype=torch.float32),
            )
        return tuple(t.cpu().numpy() for t in detections)

"""PyTorch backend: runs a vfnet-serve checkpoint with the reference model (imports torch lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import ModelLoadError, graph_inputs, model_card
from ..images import Batch
from . import BackendOptions


class TorchBackend:
    """Serves a `.safetensors` checkpoint with `vfnet.model`. options.device: "auto" (CUDA if
    available), "cuda", "cpu". options.intra_op_threads / inter_op_threads set torch's thread pools
    (process-wide; the inter-op pool only before torch has run anything in this process). On CUDA a
    float32 model's matmuls and cuDNN convolutions compute in float32 (torch's TF32 switches off,
    process-wide) unless options.precision is "tf32"."""

    name = "torch"

    def __init__(self, path: Path, options: BackendOptions):
        device, intra_op_threads, inter_op_threads = options.device, options.intra_op_threads, options.inter_op_threads
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
        self.card = model_card(self.model, precision, version)
        self.precision = options.artifact_precision(self.name, self.card, self.device)
        if self.device == "cuda":
            mode = "tf32" if self.precision == "tf32" else "ieee"  # cuDNN convolutions default to TF32
            torch.backends.cuda.matmul.fp32_precision = mode
            torch.backends.cudnn.conv.fp32_precision = mode

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, ...]:
        torch = self._torch
        images, image_sizes, iou = (torch.from_numpy(array) for array in graph_inputs(batch, iou_threshold).values())
        with torch.inference_mode():
            detections = self.model(images.to(self.torch_device), image_sizes.to(self.torch_device), iou)
        return tuple(t.cpu().numpy() for t in detections)

"""The plugin graph: the detector with each star deformable convolution written as one TensorRT
`StarDeformConv` node, fed by the features, bbox_init and the weight, with no offset sub-graph.

    StarDeformConv (domain trt.plugins, version 1; TensorRT creator in namespace "")
      inputs  features [B, C, H, W] (the network's type), bbox_init [B, 4, H, W] float32 (l, t, r, b
              pixels), weight [C_out, C, 3, 3] (the network's type)
      attribute stride (int): the FPN level's stride
      output  [B, C_out, H, W] (the network's type)

The node's domain is what both TensorRT's ONNX parser (namespace from the domain, since 10.10) and
ONNX Runtime's TensorRT execution provider (plugins as custom ops of `trt.plugins`) look for. The
DCNv2 layers of the _mdconv presets stay standard `DeformConv`, which TensorRT imports natively.
Everything else (normalisation, NMS, outputs) is the standard export's.
"""

from __future__ import annotations

import torch
from torch import nn

from vfnet.model import VFNet
from vfnet.model.head import StarDeformConv2d

from .prepare import with_star_convs_replaced

PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_OP = "StarDeformConv"


class StarDeformConvNode(nn.Module):
    """Stands for a StarDeformConv2d in the exported graph (it only computes under torch.onnx.export)."""

    def __init__(self, conv: StarDeformConv2d):
        super().__init__()
        self.weight = conv.weight

    def forward(self, x: torch.Tensor, bbox_init: torch.Tensor, stride: int) -> torch.Tensor:
        batch, _, height, width = x.shape
        return torch.onnx.ops.symbolic(
            f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
            (x, bbox_init.float(), self.weight.to(x.dtype)),
            {"stride": int(stride)},
            dtype=x.dtype,
            shape=(batch, self.weight.shape[0], height, width),  # [B, C_out, H, W]
            version=1,
        )


def with_plugin_nodes(model: VFNet) -> VFNet:
    """A copy of `model` whose star convolutions export as StarDeformConv nodes (ValueError for a
    model without any)."""
    return with_star_convs_replaced(model, StarDeformConvNode, "--plugin")

"""DeformConv in ONNX Runtime equals torchvision's deform_conv2d, with and without a mask (DCNv2)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from vfnet.model.layers import ModulatedDeformConv2d, deform_conv2d


class TwoDeformConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.dcnv2 = ModulatedDeformConv2d(16, 32, stride=2, groups=4)
        nn.init.normal_(self.dcnv2.conv_offset.weight, std=0.1)  # non-trivial offsets and mask
        self.dcnv1_weight = nn.Parameter(torch.randn(8, 32, 3, 3) * 0.1)

    def forward(self, x, offset):
        return deform_conv2d(self.dcnv2(x), offset, self.dcnv1_weight)


def test_deform_conv_with_and_without_mask(tmp_path):
    torch.manual_seed(0)
    module = TwoDeformConvs().eval()
    x, offset = torch.randn(2, 16, 20, 26), torch.randn(2, 18, 10, 13) * 2
    path = tmp_path / "dcn.onnx"
    torch.onnx.export(module, (x, offset), str(path), dynamo=True, opset_version=19, input_names=["x", "offset"])
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "offset": offset.numpy()})
    with torch.no_grad():
        want = module(x, offset).numpy()
    assert np.abs(got - want).max() <= 1e-4

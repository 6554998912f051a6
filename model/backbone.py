"""ResNet / ResNeXt backbone (torchvision), returning C3, C4, C5.

torchvision's ResNet is mmdetection's "pytorch"-style ResNet: the stride sits on the 3x3 conv2,
and its parameter names (`conv1`, `bn1`, `layer1.0.downsample.0`, ...) are the official
checkpoints' `backbone.*` names, so no renaming is needed. For the `_mdconv` presets every conv2
of the chosen stages becomes a DCNv2 (`ModulatedDeformConv2d`, keys `conv2.weight` and
`conv2.conv_offset.*`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .config import VFNetConfig
from .layers import ModulatedDeformConv2d

_BLOCKS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class Backbone(nn.Module):
    """forward(x [B, 3, H, W]) -> [C3 [B, c3, H/8, W/8], C4 [.., H/16, ..], C5 [.., H/32, ..]].

    Output channels are `out_channels` (512/1024/2048 for Bottleneck nets, 128/256/512 for ResNet-18).
    In training mode BatchNorm stays in eval mode when `config.norm_eval`, and the stem plus the
    first `config.frozen_stages` stages are frozen (-1: nothing) (no gradient, eval mode).
    """

    def __init__(self, config: VFNetConfig):
        super().__init__()
        if config.depth not in _BLOCKS:
            raise ValueError(f"unsupported ResNet depth {config.depth}; choose one of {sorted(_BLOCKS)}")
        block, layers = _BLOCKS[config.depth]
        net = ResNet(block, layers, groups=config.groups, width_per_group=config.width_per_group)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        for stage, use_dcn in zip(stages, config.dcn_stages):
            if use_dcn:
                if block is not Bottleneck:
                    raise ValueError("DCNv2 stages need a Bottleneck ResNet (depth 50 or more)")
                for b in stage:
                    b.conv2 = ModulatedDeformConv2d(b.conv2.in_channels, b.conv2.out_channels, stride=b.conv2.stride[0], groups=b.conv2.groups)
        expansion = block.expansion
        self.out_channels = (128 * expansion, 256 * expansion, 512 * expansion)
        self.norm_eval = config.norm_eval
        stem = [self.conv1, self.bn1] if config.frozen_stages >= 0 else []
        self.frozen = stem + stages[: max(config.frozen_stages, 0)]
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            for module in self.frozen:
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]

"""Small models built from our layers, shared by the compile and export tests."""
import torch
from torch import nn

import cnn

from . import DEVICE


class BasicBlock(nn.Module):
    """torchvision's BasicBlock on our layers: conv-bn-relu-conv-bn, + identity or a 1x1
    strided downsample, relu (one shared in-place ReLU, as torchvision's)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = cnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = cnn.BatchNorm2d(c_out)
        self.relu = cnn.ReLU(inplace=True)
        self.conv2 = cnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = cnn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(cnn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            cnn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def resnet_stack(channels: int = 4, classes: int = 3) -> nn.Module:
    """Stem conv (stride 2), max pool, two BasicBlocks (the second with a 1x1 downsample),
    adaptive average pool, linear: (N, 3, H, W) -> (N, classes)."""
    torch.manual_seed(0)
    return nn.Sequential(
        cnn.Conv2d(3, channels, 3, 2, 1, bias=False), cnn.BatchNorm2d(channels),
        cnn.ReLU(inplace=True), cnn.MaxPool2d(3, 2, 1),
        BasicBlock(channels, channels), BasicBlock(channels, 2 * channels, stride=2),
        cnn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, classes),
    ).to(DEVICE)

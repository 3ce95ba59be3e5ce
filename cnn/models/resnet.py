"""ResNet-18/34/50 on our layers, with torchvision's module names and state_dict keys exactly.

    model = cnn.models.resnet18(num_classes=1000)                 # (N, 3, H, W) -> (N, 1000)
    model.load_state_dict(torch.load("resnet18-f37072fd.pth"), strict=True)   # torchvision's file
    model = cnn.models.resnet50(weights="resnet50.pth", num_classes=10, in_channels=1)

The code follows ``torchvision.models.resnet`` line for line (stem conv 7x7/2, max pool 3x3/2,
four stages of BasicBlock or Bottleneck with a 1x1 conv + batch norm ``downsample`` where the
shape changes, global average pool, ``fc``), with our Conv2d, BatchNorm2d, ReLU, MaxPool2d and
AdaptiveAvgPool2d; the same initialisation (kaiming normal fan_out for convs, batch norm weight
1 and bias 0, torch's default for ``fc``). ``width`` (64 in torchvision) scales every stage, so
tests can build small ones; the published architectures use 64.

Fused (``cnn.fuse(model)``): every conv runs in one ConvBNAct2d with its batch norm: the stem
and each block's inner convs with their ReLU, each block's last conv with the residual add and
the ReLU in its epilogue (``relu(bn(conv(out)) + identity)``: the blocks write the sum with the
main path first, so the add goes to it), the downsample conv with its batch norm only. The
blocks then become fx GraphModules keeping their names and keys (see ``cnn.fuse``).
"""
from pathlib import Path

import torch
from torch import nn

from ..layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, MaxPool2d, ReLU


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> Conv2d:
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> Conv2d:
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm, plus the (downsampled) input: (N, inplanes, H, W) ->
    (N, planes, H/stride, W/stride). Keys conv1, bn1, conv2, bn2, downsample.{0,1}."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # main path first: cnn.fuse gives it the add


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet V1.5"), 1x1 expand by 4, plus
    the (downsampled) input: (N, inplanes, H, W) -> (N, 4 planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.relu = ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: (N, in_channels, H, W) -> (N, num_classes) logits."""

    def __init__(self, block, layers, num_classes: int = 1000, in_channels: int = 3,
                 width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(width)
        self.relu = ReLU(inplace=True)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))      # (N, w, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 8 w e, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def read_state_dict(weights) -> dict:
    """A state_dict from a path (torch.load, weights_only) or a dict; a checkpoint that wraps
    it as {"model": ...} or {"state_dict": ...} is unwrapped."""
    if isinstance(weights, (str, Path)):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(weights, dict):
        raise TypeError(f"weights: expected a path or a state_dict, got {type(weights).__name__}")
    for key in ("model", "state_dict"):
        if key in weights and isinstance(weights[key], dict):
            return weights[key]
    return weights


@torch.no_grad()
def load_pretrained(model: nn.Module, weights, head: str = "fc") -> list:
    """Load ``weights`` (path or state_dict) into ``model``; returns the keys not loaded.

    Keys and shapes must match strictly, with two adaptations for transfer learning:
      - a ``head`` (e.g. "fc") whose shape differs (another number of classes) keeps its fresh
        initialisation; its keys are returned;
      - a first conv with 3 input channels loaded into one with 1 takes the sum over the
        channels (the response to a grey image repeated on R, G and B).
    """
    state = dict(read_state_dict(weights))
    own = model.state_dict()
    skipped = []
    for key in list(state):
        if key not in own or own[key].shape == state[key].shape:
            continue
        if key.split(".")[0] == head:
            skipped.append(key)
            del state[key]
        elif state[key].dim() == 4 and state[key].shape[1] == 3 and own[key].shape[1] == 1 \
                and state[key].shape[0] == own[key].shape[0]:
            state[key] = state[key].sum(1, keepdim=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != set(skipped):
        raise RuntimeError(f"load_pretrained: keys do not match: missing "
                           f"{sorted(set(missing) - set(skipped))}, unexpected {unexpected}")
    return skipped


def _resnet(block, layers, num_classes, in_channels, weights, width):
    model = ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, width=width)
    if weights is not None:
        load_pretrained(model, weights)
    return model


def resnet18(num_classes: int = 1000, in_channels: int = 3, weights=None, width: int = 64):
    """ResNet-18 (BasicBlock x [2, 2, 2, 2]); ``weights``: a path or state_dict to load (see
    ``load_pretrained``: torchvision's file loads exactly; another head size stays fresh)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, weights, width)


def resnet34(num_classes: int = 1000, in_channels: int = 3, weights=None, width: int = 64):
    """ResNet-34 (BasicBlock x [3, 4, 6, 3]); ``weights`` as for resnet18."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, weights, width)


def resnet50(num_classes: int = 1000, in_channels: int = 3, weights=None, width: int = 64):
    """ResNet-50 (Bottleneck x [3, 4, 6, 3]); ``weights`` as for resnet18."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, weights, width)


ARCHS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "load_pretrained", "read_state_dict", "ARCHS"]

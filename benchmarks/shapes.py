"""The shapes the benchmarks run: the seed's MNIST CNN and ResNet-18's convolutions.

Every shape is named, so a CSV row says which layer it measured. Convolution shapes give the
input (N, C_in, H, W) and the layer's (C_out, kernel, stride, padding); pooling and batch norm
shapes give the tensor they run on.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvShape:
    """conv2d(x: (batch, c_in, h, w), weight: (c_out, c_in / groups, k, k)), stride, padding,
    bias. The benchmarked shapes are ungrouped; the static report adds a depthwise layer."""

    name: str
    batch: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    groups: int = 1

    @property
    def out_hw(self) -> tuple:
        f = lambda size: (size + 2 * self.padding - self.kernel) // self.stride + 1
        return f(self.h), f(self.w)


@dataclass(frozen=True)
class TensorShape:
    """An activation (batch, channels, h, w) for pooling, batch norm and ReLU; pooling adds its
    window (kernel, stride, padding)."""

    name: str
    batch: int
    channels: int
    h: int
    w: int
    kernel: int = 2
    stride: int = 2
    padding: int = 0


MNIST_BATCHES = (64, 256, 1024)
RESNET_BATCH = 32


def mnist_convs(batch: int):
    """The seed's MyCNN: conv 1->32 3x3 pad 1 on 28x28, conv 32->64 3x3 pad 1 on 14x14."""
    return [ConvShape(f"mnist.conv1.b{batch}", batch, 1, 28, 28, 32, 3, 1, 1),
            ConvShape(f"mnist.conv2.b{batch}", batch, 32, 14, 14, 64, 3, 1, 1)]


def mnist_activations(batch: int):
    """The tensors after each conv: what max pool 2x2, batch norm and ReLU see."""
    return [TensorShape(f"mnist.act1.b{batch}", batch, 32, 28, 28),
            TensorShape(f"mnist.act2.b{batch}", batch, 64, 14, 14)]


def resnet18_convs(batch: int = RESNET_BATCH):
    """ResNet-18's distinct conv layers on 224x224 (no bias: each is followed by batch norm)."""
    b = batch
    return [
        ConvShape(f"resnet18.stem7x7s2.b{b}", b, 3, 224, 224, 64, 7, 2, 3, False),
        ConvShape(f"resnet18.layer1.3x3.b{b}", b, 64, 56, 56, 64, 3, 1, 1, False),
        ConvShape(f"resnet18.layer2.3x3s2.b{b}", b, 64, 56, 56, 128, 3, 2, 1, False),
        ConvShape(f"resnet18.layer2.3x3.b{b}", b, 128, 28, 28, 128, 3, 1, 1, False),
        ConvShape(f"resnet18.layer2.down1x1s2.b{b}", b, 64, 56, 56, 128, 1, 2, 0, False),
        ConvShape(f"resnet18.layer3.3x3s2.b{b}", b, 128, 28, 28, 256, 3, 2, 1, False),
        ConvShape(f"resnet18.layer3.3x3.b{b}", b, 256, 14, 14, 256, 3, 1, 1, False),
        ConvShape(f"resnet18.layer3.down1x1s2.b{b}", b, 128, 28, 28, 256, 1, 2, 0, False),
        ConvShape(f"resnet18.layer4.3x3s2.b{b}", b, 256, 14, 14, 512, 3, 2, 1, False),
        ConvShape(f"resnet18.layer4.3x3.b{b}", b, 512, 7, 7, 512, 3, 1, 1, False),
        ConvShape(f"resnet18.layer4.down1x1s2.b{b}", b, 256, 14, 14, 512, 1, 2, 0, False),
    ]


def resnet18_activations(batch: int = RESNET_BATCH):
    """The stem's output (3x3 stride-2 pad-1 max pool, batch norm) and one tensor per stage."""
    b = batch
    return [TensorShape(f"resnet18.stem_out.b{b}", b, 64, 112, 112, 3, 2, 1),
            TensorShape(f"resnet18.layer1_out.b{b}", b, 64, 56, 56),
            TensorShape(f"resnet18.layer3_out.b{b}", b, 256, 14, 14)]


def conv_shapes():
    return [s for b in MNIST_BATCHES for s in mnist_convs(b)] + resnet18_convs()


def activation_shapes():
    return [s for b in MNIST_BATCHES for s in mnist_activations(b)] + resnet18_activations()


# One tiny shape per kind: what the CPU smoke run pushes through the interpreter.
SMOKE_CONV = ConvShape("smoke.conv3x3", 2, 4, 8, 8, 8, 3, 1, 1)
SMOKE_ACTIVATION = TensorShape("smoke.act", 2, 4, 8, 8)

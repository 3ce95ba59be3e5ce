"""The seed's MNIST CNN (MyCNN), on our Triton layers or on torch's own.

    conv 1->32 3x3 pad 1, ReLU, max pool 2   (N, 1, 28, 28) -> (N, 32, 14, 14)
    conv 32->64 3x3 pad 1, ReLU, max pool 2  -> (N, 64, 7, 7)
    flatten, linear 3136->128, ReLU [, dropout], linear 128->10 -> (N, 10) logits

Options: dropout before the last layer, batch norm after each conv (conv+BN+ReLU is then one
fused ``cnn.ConvBNReLU2d``). ``backend='torch'`` builds the same network from torch.nn layers
with the same parameters for the same seed and the same state_dict keys, so checkpoints move
between backends.
"""
import types

import torch
from torch import nn

from ..layers import BatchNorm2d, Conv2d, ConvBNReLU2d, MaxPool2d, ReLU

BACKENDS = ("triton", "torch")


def _layers(backend: str):
    if backend == "triton":
        return types.SimpleNamespace(Conv2d=Conv2d, BatchNorm2d=BatchNorm2d, MaxPool2d=MaxPool2d,
                                     ReLU=ReLU, ConvBNReLU2d=ConvBNReLU2d)
    if backend == "torch":
        return types.SimpleNamespace(Conv2d=nn.Conv2d, BatchNorm2d=nn.BatchNorm2d,
                                     MaxPool2d=nn.MaxPool2d, ReLU=nn.ReLU,
                                     ConvBNReLU2d=lambda conv, bn, relu: nn.Sequential(conv, bn,
                                                                                       relu))
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _conv_block(layers, c_in: int, c_out: int, batchnorm: bool) -> nn.Sequential:
    """Sequential(conv, ReLU) or (conv, BN, ReLU): keys '0.weight', '0.bias' [, '1.weight', ...]."""
    conv = layers.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1)
    if batchnorm:
        return layers.ConvBNReLU2d(conv, layers.BatchNorm2d(c_out), layers.ReLU())
    return nn.Sequential(conv, layers.ReLU())


class MyCNN(nn.Module):
    """The seed's MyCNN: input (N, 1, 28, 28) normalised images -> (N, num_classes) logits (10
    in the seed).

    seed: initialise with a private generator seeded so (conv weights normal(0, 0.01), linear
    weights xavier_uniform, biases zero), so both backends start from identical parameters
    whatever else has used the global RNG; None uses the global RNG.
    """

    def __init__(self, dropout: float = 0.0, batchnorm: bool = False, backend: str = "triton",
                 seed: int = None, num_classes: int = 10):
        super().__init__()
        layers = _layers(backend)
        self.backend, self.batchnorm = backend, batchnorm
        self.conv1 = _conv_block(layers, 1, 32, batchnorm)
        self.pool1 = layers.MaxPool2d(2, 2)
        self.conv2 = _conv_block(layers, 32, 64, batchnorm)
        self.pool2 = layers.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(7 * 7 * 64, 128)
        self.relu = layers.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(128, num_classes)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        initialize_weights(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))          # (N, 32, 14, 14)
        x = self.pool2(self.conv2(x))          # (N, 64, 7, 7)
        x = x.flatten(1)                       # (N, 3136), the seed's x.view(x.size(0), -1)
        x = self.dropout(self.relu(self.fc1(x)))
        return self.fc2(x)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"


@torch.no_grad()
def initialize_weights(model: nn.Module, generator: torch.Generator = None) -> None:
    """The seed's init: conv weights normal(0, 0.01), linear weights xavier_uniform, biases 0.
    Batch norm keeps torch's (weight 1, bias 0). Modules are visited in registration order, so
    two models built alike draw the same numbers from the same generator."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


__all__ = ["MyCNN", "initialize_weights", "BACKENDS"]

"""The models ``python -m cnn.train --arch`` builds, from the library's zoo (``cnn.models``).

    model = build_model("resnet18", backend="torch", in_channels=1, num_classes=10)
    freeze_biases_before_batch_norm(model)   # the conv biases batch norm cancels stay fixed
    head_name(model)                         # "fc2" (MyCNN) or "fc" (ResNet): transfer's head
"""
from torch import nn

from ..conversion import CONVERSIONS
from ..models import resnet
from ..models.mycnn import BACKENDS, MyCNN

ARCHS = ("mycnn", "resnet18", "resnet34", "resnet50")


def to_torch_layers(model: nn.Module) -> nn.Module:
    """The reverse of ``cnn.convert``, in place: every module whose type is exactly one of our
    layers becomes the torch class it subclasses (ours override forward only, so parameters,
    buffers, hooks and state_dict keys stay). Returns ``model``; used to build the ResNets on
    the torch backend."""
    ours_to_torch = {ours: theirs for theirs, ours in CONVERSIONS.items()}
    for m in model.modules():
        if type(m) in ours_to_torch:
            m.__class__ = ours_to_torch[type(m)]
    return model


def build_model(arch: str = "mycnn", *, num_classes: int = 10, backend: str = "triton",
                dropout: float = 0.0, batchnorm: bool = False, seed: int = None,
                in_channels: int = 1, width: int = 64) -> nn.Module:
    """The model ``python -m cnn.train --arch`` trains: the seed's MyCNN, or a ResNet (on our
    layers, or torch's with backend 'torch') taking ``in_channels`` (1 for MNIST) images of
    any size >= 1 pixel after its 32x downsampling's padding (28x28 MNIST ends at 1x1)."""
    if arch == "mycnn":
        return MyCNN(dropout=dropout, batchnorm=batchnorm, backend=backend, seed=seed,
                     num_classes=num_classes)
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model = resnet.ARCHS[arch](num_classes=num_classes, in_channels=in_channels, width=width)
    return to_torch_layers(model) if backend == "torch" else model


def head_name(model: nn.Module) -> str:
    """The name of the classifier layer transfer learning replaces: fc2 (MyCNN) or fc."""
    return "fc2" if isinstance(model, MyCNN) else "fc"


def freeze_biases_before_batch_norm(model: nn.Module) -> list:
    """Stop training every conv bias that a batch norm right after it cancels (the first two
    layers of a Sequential, e.g. MyCNN's conv+BN+ReLU blocks): ``requires_grad_(False)``, so
    they keep their value. In exact arithmetic their gradient is 0 (batch norm subtracts the
    batch mean); in floating point it is rounding noise, which Adam's normalised step turns
    into lr-sized random moves that differ between any two implementations, and which the
    running mean then follows, so evaluation would differ too. Returns their names."""
    frozen = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Sequential) or len(m) < 2:
            continue
        conv, norm = m[0], m[1]
        if isinstance(conv, nn.Conv2d) and conv.bias is not None and conv.bias.requires_grad \
                and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            conv.bias.requires_grad_(False)
            frozen.append(f"{name}.0.bias" if name else "0.bias")
    return frozen


__all__ = ["ARCHS", "BACKENDS", "build_model", "to_torch_layers", "head_name",
           "freeze_biases_before_batch_norm"]

"""cnn.convert: run any torch model on our kernels, without rewriting it.

    ours = cnn.convert(model)                          # a converted deep copy; model untouched
    ours, report = cnn.convert(model, report=True)     # and what was converted or left
    cnn.convert(model, inplace=True, fuse=True)        # convert model itself, then cnn.fuse it

Every module whose type is exactly one of torch's ``nn.Conv2d``, ``nn.Conv1d``,
``nn.ConvTranspose2d``, ``nn.ConvTranspose1d``, ``nn.BatchNorm2d``, ``nn.MaxPool2d``,
``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.AdaptiveMaxPool2d``, ``nn.ReLU``, ``nn.ReLU6``,
``nn.LeakyReLU``, ``nn.SiLU``, ``nn.Hardswish`` or ``nn.GELU`` becomes the cnn module of the
same name. Our modules subclass torch's and override forward only, so the
conversion swaps the module's class and nothing else: the same parameter and buffer tensors
(device, dtype, memory format), training flag, hooks and attributes, and state_dict keys are
unchanged, so checkpoints load both ways.

Left as they are (and listed in the report, which is also logged at INFO level on the
``cnn.convert`` logger):
  subclasses of those classes (they may override forward or the helpers forward calls,
  e.g. ``_conv_forward``), lazy modules not yet initialised (initialised ones have become the
  plain torch class and are converted), and every other leaf layer (nn.Linear, nn.Hardtanh,
  nn.Dropout, ...), which keeps running on torch. Functional calls inside a forward
  (``F.relu``, ``torch.cat``) are code, not modules: they stay torch's.
"""
import copy
import logging
from dataclasses import dataclass, field

from torch import nn

from .fusion import fuse as fuse_chains
from .layers.activation import GELU, Hardswish, LeakyReLU, ReLU6, SiLU
from .layers.batch_norm import BatchNorm2d
from .layers.conv1d import Conv1d, ConvTranspose1d
from .layers.conv2d import Conv2d
from .layers.conv_bn_act import ConvBNAct2d, ConvBNReLU2d
from .layers.conv_transpose2d import ConvTranspose2d
from .layers.pool2d import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .layers.relu import ReLU

log = logging.getLogger("cnn.convert")  # the name of the function users call

# torch class -> ours; only exact types are converted (see the module docstring).
CONVERSIONS = {
    nn.Conv2d: Conv2d,
    nn.Conv1d: Conv1d,
    nn.ConvTranspose2d: ConvTranspose2d,
    nn.ConvTranspose1d: ConvTranspose1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d,
    nn.ReLU: ReLU,
    nn.ReLU6: ReLU6,
    nn.LeakyReLU: LeakyReLU,
    nn.SiLU: SiLU,
    nn.Hardswish: Hardswish,
    nn.GELU: GELU,
}
OURS = (*CONVERSIONS.values(), ConvBNReLU2d)


@dataclass
class ConversionReport:
    """What ``convert`` did. Names are ``model.named_modules()`` names ("" is the model).

    converted  [(name, torch class name)] modules now on our kernels
    left       [(name, class name, reason)] leaf modules still running torch's code
    fused      [name] ConvBNAct2d modules (one fused conv each) after ``fuse=True``
    """

    converted: list = field(default_factory=list)
    left: list = field(default_factory=list)
    fused: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"cnn.convert: {len(self.converted)} modules on our kernels"
                 + (f", {len(self.fused)} convs fused (ConvBNAct2d)" if self.fused else "")
                 + f", {len(self.left)} left on torch"]
        lines += [f"  left {name or '(model)'}: {cls} ({reason})"
                  for name, cls, reason in self.left]
        return "\n".join(lines)


def _left_reason(module: nn.Module):
    """Why a module that is not converted stays torch's, or None when it needs no mention
    (containers, our own modules)."""
    if isinstance(module, OURS):
        return None
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return "lazy module not yet initialised: run one forward first, then convert"
    for torch_class in CONVERSIONS:
        if isinstance(module, torch_class):
            overrides = type(module).forward is not torch_class.forward
            return (f"subclass of nn.{torch_class.__name__} "
                    + ("that overrides forward" if overrides else "(its methods may differ)"))
    if next(module.children(), None) is None:
        return "not implemented by cnn"
    return None


def convert(model: nn.Module, inplace: bool = False, *, fuse: bool = False,
            report: bool = False):
    """Return ``model`` with its torch layers replaced by cnn's (see the module docstring).

    inplace=False (default): a deep copy is converted, ``model`` is untouched.
    inplace=True: ``model`` itself is converted and returned.
    fuse=True: then ``cnn.fuse`` puts each conv -> [bn] -> [+ residual] -> [activation]
    chain in one ConvBNAct2d (the bn and activation slots then hold nn.Identity; state_dict
    keys of the fused modules are those of ``nn.Sequential(conv, bn, act)``; modules whose
    forward must change become fx GraphModules, see ``cnn.fuse``).
    report=True: return ``(model, ConversionReport)`` instead of the model alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnn.convert: expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    result = ConversionReport()
    for name, module in model.named_modules(remove_duplicate=True):
        ours = CONVERSIONS.get(type(module))
        if ours is not None:
            # Same __dict__ (parameters, buffers, hooks, flags): only forward changes.
            module.__class__ = ours
            result.converted.append((name, f"nn.{ours.__name__}"))
            continue
        reason = _left_reason(module)
        if reason is not None:
            result.left.append((name, type(module).__name__, reason))
    if fuse:
        model = fuse_chains(model, inplace=True)
        result.fused = [n for n, m in model.named_modules() if isinstance(m, ConvBNAct2d)]
    log.info("%s", result)
    return (model, result) if report else model


__all__ = ["convert", "ConversionReport", "CONVERSIONS"]

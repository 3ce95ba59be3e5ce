"""cnn.fuse: replace every Conv2d -> BatchNorm2d -> ReLU chain of a model by ConvBNReLU2d.

    fused = cnn.fuse(model)                # a fused deep copy; model is left as it was
    cnn.fuse(model, inplace=True)          # or fuse model itself (and return it)

Copying by default follows ``torch.ao.quantization.fuse_modules``. Where chains are found:
  nn.Sequential     consecutive children conv, bn, relu (a Sequential whose forward is
                    nn.Sequential's own);
  other modules     those with a Conv2d and a BatchNorm2d among their children: torch.fx traces
                    their forward with every submodule as a leaf, and a chain is a conv call
                    whose only user is a bn call whose only user is a ReLU (an nn.ReLU module,
                    F.relu / torch.relu, or Tensor.relu). A module fx cannot trace raises a
                    RuntimeError that names it; fuse its parts separately instead.
The replacement follows torch's fused-module convention: the conv's slot holds
``ConvBNReLU2d(conv, bn, relu)`` (the same conv and bn objects, so the state carries over),
the bn's and relu's slots hold ``nn.Identity``, so names and forward code stay valid.
A ReLU that is also used elsewhere (one shared ``self.relu``, as in torchvision's BasicBlock)
or a functional relu stays where it is: it then meets the fused module's non-negative output
and returns it unchanged (relu is idempotent), so results are the same at one extra launch.
Modules of torch's or cnn's classes qualify; subclasses that override forward, lazy modules
and anything else are left as they are.
"""
import copy
from collections import Counter

import torch
from torch import fx, nn

from .layers.batch_norm import BatchNorm2d
from .layers.conv2d import Conv2d
from .layers.conv_bn_act import ConvBNReLU2d
from .layers.relu import ReLU

_CONV_FORWARDS = (nn.Conv2d.forward, Conv2d.forward)
_BN_FORWARDS = (nn.BatchNorm2d.forward, BatchNorm2d.forward)
_RELU_FORWARDS = (nn.ReLU.forward, ReLU.forward)
_RELU_FUNCTIONS = (nn.functional.relu, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")


def _is_conv(m) -> bool:
    return isinstance(m, nn.Conv2d) and type(m).forward in _CONV_FORWARDS \
        and not isinstance(m, nn.modules.lazy.LazyModuleMixin)


def _is_bn(m, channels: int) -> bool:
    return isinstance(m, nn.BatchNorm2d) and type(m).forward in _BN_FORWARDS \
        and not isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.num_features == channels


def _is_relu(m) -> bool:
    return isinstance(m, nn.ReLU) and type(m).forward in _RELU_FORWARDS


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _fuse_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    i = 0
    while i + 2 < len(names):
        conv, bn, relu = (seq._modules[n] for n in names[i:i + 3])
        if _is_conv(conv) and _is_bn(bn, conv.out_channels) and _is_relu(relu):
            seq._modules[names[i]] = ConvBNReLU2d(conv, bn, relu)
            seq._modules[names[i + 1]] = nn.Identity()
            seq._modules[names[i + 2]] = nn.Identity()
            i += 3
        else:
            i += 1


class _SubmodulesAsLeaves(fx.Tracer):
    """Traces one module's own forward: every submodule call is a leaf call_module node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _relu_target(node: fx.Node, bn_node: fx.Node, root: nn.Module, calls: Counter):
    """(relu module name or None, whether that module may become Identity) when node is a
    ReLU applied to bn_node only; None when it is not a ReLU."""
    if not node.args or node.args[0] is not bn_node:
        return None
    if node.op == "call_module" and _is_relu(root.get_submodule(node.target)) \
            and len(node.args) == 1:
        return node.target, calls[node.target] == 1
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return None, False
    if node.op == "call_method" and node.target in _RELU_METHODS and len(node.args) == 1:
        return None, False
    return None


def _fuse_traced(module: nn.Module, path: str) -> None:
    try:
        graph = _SubmodulesAsLeaves().trace(module)
    except Exception as error:  # fx raises many types; all mean "cannot trace"
        raise RuntimeError(
            f"cnn.fuse: torch.fx cannot trace the forward of {path or 'the model'} "
            f"({type(module).__name__}) to find its Conv2d -> BatchNorm2d -> ReLU chains: "
            f"{type(error).__name__}: {error}. Fuse its traceable parts separately (e.g. "
            f"module.part = cnn.fuse(module.part)) or build ConvBNReLU2d(conv, bn, relu) "
            f"yourself.") from error
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    fusions = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or len(node.users) != 1:
            continue
        conv = module.get_submodule(node.target)
        if not _is_conv(conv):
            continue
        (bn_node,) = node.users
        if bn_node.op != "call_module" or calls[bn_node.target] != 1 or \
                bn_node.args != (node,) or bn_node.kwargs or len(bn_node.users) != 1:
            continue
        bn = module.get_submodule(bn_node.target)
        if not _is_bn(bn, conv.out_channels):
            continue
        relu = _relu_target(next(iter(bn_node.users)), bn_node, module, calls)
        if relu is not None:
            fusions.append((node.target, bn_node.target, *relu))
    for conv_name, bn_name, relu_name, relu_removable in fusions:
        relu = module.get_submodule(relu_name) if relu_removable else None
        fused = ConvBNReLU2d(module.get_submodule(conv_name), module.get_submodule(bn_name),
                             relu)
        _set_submodule(module, conv_name, fused)
        _set_submodule(module, bn_name, nn.Identity())
        if relu_removable:
            _set_submodule(module, relu_name, nn.Identity())


def _fuse_module(module: nn.Module, path: str) -> None:
    if isinstance(module, ConvBNReLU2d):
        return
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        _fuse_sequential(module)
    else:
        children = list(module.children())
        has_conv = any(_is_conv(m) for m in children)
        if has_conv and any(isinstance(m, nn.BatchNorm2d) for m in children):
            _fuse_traced(module, path)
    for name, child in module.named_children():
        _fuse_module(child, f"{path}.{name}" if path else name)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every Conv2d -> BatchNorm2d -> ReLU chain replaced by a
    ConvBNReLU2d (see the module docstring for where chains are found).

    inplace=False (default, as torch.ao.quantization.fuse_modules): a deep copy is fused and
    returned, ``model`` is untouched. inplace=True: ``model`` itself is fused and returned.
    Accepts torch's nn.Conv2d / nn.BatchNorm2d / nn.ReLU and cnn's. Parameters, buffers and
    training flags carry over; the fused model gives the unfused one's results in training
    and evaluation.
    """
    if not inplace:
        model = copy.deepcopy(model)
    _fuse_module(model, "")
    return model


__all__ = ["fuse"]

"""cnn.fuse: put every conv of a model that is followed by a batch norm, a residual add or an
activation into one ConvBNAct2d, so each such block is one fused call.

    fused = cnn.fuse(model)                # a fused deep copy; model is left as it was
    cnn.fuse(model, inplace=True)          # or fuse model itself (and return it)

Chains, as torchvision's models are built (conv: nn.Conv2d, depthwise included; bn:
nn.BatchNorm2d; act: nn.ReLU, ReLU6, LeakyReLU, SiLU, Hardswish, GELU, as modules or as their
functional forms):
  conv -> act                    seed's MyCNN, VGG, SqueezeNet
  conv -> bn [-> act]            most blocks; ResNet's downsample
  conv -> bn -> add -> act       end of ResNet's BasicBlock and Bottleneck
  conv -> bn -> add              MobileNetV2's inverted residual, EfficientNet's MBConv
The add is ``out + identity`` in either order (``+``, ``+=``, ``torch.add``, ``Tensor.add`` /
``add_`` with the chain's value as the tensor written to), with no ``alpha``; the identity must
have the conv output's shape (a broadcast residual is not a residual block). When both operands
of an add end a chain, the first operand's chain takes it.

Where chains are found: torch.fx traces each module's forward with its submodules as leaves,
except plain nn.Sequential containers, whose children are traced through (so a chain may run
from a Sequential into the module around it, as MobileNetV2's does). A module fx cannot trace
is left as it is, with a warning that names it; its nn.Sequential children are still fused as
consecutive (conv, [bn], [act]) children. Modules of torch's classes or cnn's qualify;
subclasses that override forward, lazy modules and modules called more than once are left.

How a chain is replaced:
  slot replacement  when every step is a module called once: the conv's slot holds
                    ``ConvBNAct2d(conv, bn, act)`` (the same conv, bn and act objects, so state
                    carries over), the bn's and the act's slots hold nn.Identity; the module
                    keeps its class and forward. This is torch.ao's fused-module convention.
  fx rewrite        when the forward itself must change (a residual add moves into the fused
                    call, an activation is a function, or one activation module is called at
                    several places, as BasicBlock's ``self.relu``): the module becomes a
                    FusedGraphModule (an fx.GraphModule) whose code calls the fused module with
                    ``residual=``. It keeps the original's children (the same slots as above),
                    parameters, buffers, instance attributes and training flag, and its class
                    name; not its methods or hooks. A shared activation module stays for any
                    call site that is not fused; each call site runs it once.
state_dict keys are those of the fused modules in the conv's slot ("conv1.0.weight",
"conv1.1.running_mean"), whichever way: load an unfused checkpoint before fusing.
"""
import copy
import operator
import warnings
from dataclasses import dataclass

import torch
from torch import fx, nn

from .layers.conv_bn_act import ConvBNAct2d, ConvBNReLU2d

PACKAGE = __name__.split(".")[0]  # modules whose forward is defined in cnn are cnn's own
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU)
FUSED = (ConvBNAct2d, ConvBNReLU2d)


def _forward_is_known(module: nn.Module, torch_class: type) -> bool:
    """torch's own forward, or one of cnn's subclasses (same math on our kernels)."""
    forward = type(module).forward
    return forward is torch_class.forward or \
        getattr(forward, "__module__", "").startswith(PACKAGE + ".")


def _is_conv(m) -> bool:
    return isinstance(m, nn.Conv2d) and _forward_is_known(m, nn.Conv2d) \
        and not isinstance(m, nn.modules.lazy.LazyModuleMixin)


def _is_bn(m, channels: int) -> bool:
    return isinstance(m, nn.BatchNorm2d) and _forward_is_known(m, nn.BatchNorm2d) \
        and not isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.num_features == channels


def _is_activation(m) -> bool:
    return any(isinstance(m, cls) and _forward_is_known(m, cls) for cls in ACTIVATIONS)


def _is_plain_sequential(m) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


# Functional activations -> the module that computes the same
_FUNCTIONAL_ACTIVATIONS = {
    nn.functional.relu: lambda inplace=False: nn.ReLU(),
    nn.functional.relu_: lambda: nn.ReLU(),
    torch.relu: lambda: nn.ReLU(),
    torch.relu_: lambda: nn.ReLU(),
    nn.functional.relu6: lambda inplace=False: nn.ReLU6(),
    nn.functional.leaky_relu: lambda negative_slope=0.01, inplace=False:
        nn.LeakyReLU(negative_slope),
    nn.functional.silu: lambda inplace=False: nn.SiLU(),
    nn.functional.hardswish: lambda inplace=False: nn.Hardswish(),
    nn.functional.gelu: lambda approximate="none": nn.GELU(approximate=approximate),
}
_METHOD_ACTIVATIONS = {"relu": lambda: nn.ReLU(), "relu_": lambda: nn.ReLU()}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def _functional_activation(node: fx.Node, tail: fx.Node):
    """The activation module equal to a functional or method call on ``tail``, else None."""
    table = {"call_function": _FUNCTIONAL_ACTIVATIONS, "call_method": _METHOD_ACTIVATIONS}
    build = table.get(node.op, {}).get(node.target)
    if build is None or not node.args or node.args[0] is not tail:
        return None
    options = (*node.args[1:], *node.kwargs.values())
    if any(isinstance(a, fx.Node) for a in options):  # computed in forward: not a constant
        return None
    try:
        return build(*node.args[1:], **node.kwargs)
    except TypeError:  # arguments this form does not take
        return None


def _residual(node: fx.Node, tail: fx.Node):
    """The other operand when ``node`` is ``tail + other`` (either order), else None."""
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        in_place = node.target is operator.iadd
    elif node.op == "call_method" and node.target in ("add", "add_"):
        in_place = node.target == "add_"
    else:
        return None
    if node.kwargs or len(node.args) != 2:  # alpha= or out=: not a plain sum
        return None
    first, second = node.args
    if in_place and first is not tail:  # the sum is written into the residual: keep it so
        return None
    other = second if first is tail else first if second is tail else None
    return other if isinstance(other, fx.Node) and other is not tail else None


@dataclass
class _Chain:
    """conv [-> bn] [-> add(residual)] [-> act] in a traced graph."""
    conv: fx.Node
    bn: fx.Node = None
    add: fx.Node = None
    residual_index: int = None    # which operand of the add is the residual
    act: fx.Node = None
    activation: nn.Module = None  # what the fused module applies
    act_module: bool = False      # act is a call of a module of the graph's root...
    act_shared: bool = False      # ...that is also called elsewhere (then it stays)

    @property
    def nodes(self) -> list:
        return [n for n in (self.conv, self.bn, self.add, self.act) if n is not None]

    @property
    def needs_rewrite(self) -> bool:
        return self.add is not None or (self.act is not None
                                        and (not self.act_module or self.act_shared))


def _only_user(node: fx.Node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _find_chains(root: nn.Module, graph: fx.Graph) -> list:
    calls, names = {}, {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for _, m in root.named_modules(remove_duplicate=False):
        names[id(m)] = names.get(id(m), 0) + 1

    def single(node):  # a call of a module that is called here only and has one name
        return node is not None and node.op == "call_module" and calls[node.target] == 1 \
            and names[id(root.get_submodule(node.target))] == 1 and not node.kwargs

    chains = {}  # the node that ends each conv [-> bn] -> the chain
    for node in graph.nodes:
        if not single(node) or len(node.args) != 1 or \
                not _is_conv(conv := root.get_submodule(node.target)):
            continue
        chain = _Chain(conv=node)
        bn = _only_user(node)
        if single(bn) and bn.args == (node,) and \
                _is_bn(root.get_submodule(bn.target), conv.out_channels):
            chain.bn = bn
        chains[chain.bn or chain.conv] = chain
    for tail, chain in chains.items():
        add = _only_user(tail)
        residual = _residual(add, tail) if add is not None else None
        # both operands end a chain: the first operand's chain takes the add
        if residual is not None and not (residual in chains and add.args[0] is residual):
            chain.add, chain.residual_index = add, add.args.index(residual)
            tail = add
        act = _only_user(tail)
        if act is None:
            pass
        elif act.op == "call_module" and act.args == (tail,) and not act.kwargs and \
                _is_activation(module := root.get_submodule(act.target)):
            chain.act, chain.act_module = act, True
            chain.act_shared = calls[act.target] > 1 or names[id(module)] > 1
            chain.activation = copy.deepcopy(module) if chain.act_shared else module
        elif (activation := _functional_activation(act, tail)) is not None:
            chain.act, chain.activation = act, activation
    return [c for c in chains.values() if c.bn is not None or c.act is not None]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _replace_slots(root: nn.Module, chain: _Chain) -> None:
    """The conv's slot -> ConvBNAct2d(conv, bn, act); the bn's and (if no other call site
    needs it) the act's slot -> nn.Identity."""
    bn = root.get_submodule(chain.bn.target) if chain.bn is not None else None
    fused = ConvBNAct2d(root.get_submodule(chain.conv.target), bn, chain.activation)
    _set_submodule(root, chain.conv.target, fused)
    if bn is not None:
        _set_submodule(root, chain.bn.target, nn.Identity())
    if chain.act_module and not chain.act_shared:
        _set_submodule(root, chain.act.target, nn.Identity())


def _rewrite(graph: fx.Graph, chain: _Chain) -> None:
    """The chain's nodes -> one call of the fused module, where the last of them was (the
    residual is computed by then)."""
    last = chain.nodes[-1]
    kwargs = {}
    if chain.add is not None:  # read now: an earlier rewrite may have replaced the residual
        kwargs["residual"] = chain.add.args[chain.residual_index]
    with graph.inserting_before(last):
        fused = graph.call_module(chain.conv.target, chain.conv.args, kwargs)
    last.replace_all_uses_with(fused)
    for node in reversed(chain.nodes):
        graph.erase_node(node)


# A module's own state that a FusedGraphModule takes over (GraphModule keeps only the
# submodules its code calls, in the order it calls them; these keep names and order).
_STRUCTURE = ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set")


class FusedGraphModule(fx.GraphModule):
    """A module whose forward cnn.fuse rewrote: an fx.GraphModule that keeps the original's
    class name, children (in their order, unused ones included), parameters, buffers,
    instance attributes, public class constants and training flag, also through
    copy.deepcopy and pickling (where GraphModule alone keeps only what its code calls)."""

    def __init__(self, module: nn.Module, graph: fx.Graph, class_name: str = None):
        super().__init__(module, graph, class_name=class_name or type(module).__name__)
        self._fused_class_name = class_name or type(module).__name__
        constants = {k: v for cls in reversed(type(module).__mro__) if cls not in
                     nn.Module.__mro__ and not issubclass(nn.Module, cls)
                     for k, v in vars(cls).items()
                     if not k.startswith("_") and not callable(v)
                     and not isinstance(v, (property, staticmethod, classmethod))}
        self._adopt({**constants, **module.__dict__})

    def _adopt(self, state: dict) -> None:
        for key in _STRUCTURE:
            if key in state:
                self.__dict__[key] = copy.copy(state[key])
        for key, value in state.items():
            if key not in self.__dict__ and not hasattr(type(self), key):
                self.__dict__[key] = value
        self.training = state.get("training", self.training)

    def __deepcopy__(self, memo):
        copied = super().__deepcopy__(memo)
        copied._adopt(copy.deepcopy(self.__dict__, memo))
        type(copied).__name__ = type(self).__name__  # GraphModule's copy names it GraphModule
        return copied

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_graph"}
        return (_unpickle, (super().__reduce__(), state))


def _unpickle(reduced, state: dict) -> FusedGraphModule:
    rebuild, args = reduced
    graph = rebuild(*args).graph  # GraphModule's own way back: re-traced from the code
    root = nn.Module()
    root.__dict__.update(state)
    return FusedGraphModule(root, graph, class_name=state["_fused_class_name"])


class _SequentialsInlined(fx.Tracer):
    """Traces one module's own forward: every submodule call is a leaf call_module node,
    except plain nn.Sequential containers, which are traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not _is_plain_sequential(m)


def _sequentials_in_scope(module: nn.Module):
    """The module's plain nn.Sequential descendants reached through plain Sequentials only
    (the ones a trace of its forward walks through), and whether a conv is among them."""
    sequentials, has_conv, stack = [], False, list(module.children())
    while stack:
        child = stack.pop()
        has_conv = has_conv or _is_conv(child)
        if _is_plain_sequential(child):
            sequentials.append(child)
            stack.extend(child.children())
    return sequentials, has_conv


def _fuse_traced(module: nn.Module, path: str, sequentials: list, handled: set) -> nn.Module:
    try:
        graph = _SequentialsInlined().trace(module)
    except Exception as error:  # fx raises many types; all mean "cannot trace"
        warnings.warn(
            f"cnn.fuse: torch.fx cannot trace the forward of {path or 'the model'} "
            f"({type(module).__name__}): {type(error).__name__}: {error}. Its chains are left "
            f"unfused, except inside its nn.Sequential children; fuse its traceable parts "
            f"separately or build ConvBNAct2d(conv, bn, activation) yourself.", stacklevel=3)
        return module
    handled.update(id(s) for s in sequentials)  # decided here, with the forward around them
    chains = _find_chains(module, graph)
    rewrite = any(chain.needs_rewrite for chain in chains)
    for chain in chains:
        _replace_slots(module, chain)
        if rewrite:
            _rewrite(graph, chain)
    if not rewrite:
        return module
    graph.lint()
    return FusedGraphModule(module, graph)


def _fuse_sequential(seq: nn.Sequential) -> None:
    """Consecutive children conv, [bn], [act] (at least one of the two) -> slot replacement."""
    names = list(seq._modules)
    i = 0
    while i < len(names):
        conv = seq._modules[names[i]]
        steps = [names[i]]
        nxt = seq._modules[names[i + 1]] if i + 1 < len(names) else None
        bn = nxt if _is_conv(conv) and _is_bn(nxt, conv.out_channels) else None
        if bn is not None:
            steps.append(names[i + 1])
        after = names[i + len(steps)] if i + len(steps) < len(names) else None
        act = seq._modules[after] if after is not None and _is_activation(
            seq._modules[after]) else None
        if act is not None:
            steps.append(after)
        if not _is_conv(conv) or len(steps) == 1:
            i += 1
            continue
        seq._modules[names[i]] = ConvBNAct2d(conv, bn, act)
        for name in steps[1:]:
            seq._modules[name] = nn.Identity()
        i += len(steps)


def _fuse_tree(module: nn.Module, path: str, handled: set, done: dict) -> nn.Module:
    """Fuse module and its descendants; returns what the parent's slot should hold."""
    if isinstance(module, FUSED) or isinstance(module, FusedGraphModule):
        return module
    if id(module) in done:  # registered under several names: fused once
        return done[id(module)]
    result = module
    if _is_plain_sequential(module):
        if id(module) not in handled:
            _fuse_sequential(module)
    else:
        sequentials, has_conv = _sequentials_in_scope(module)
        if has_conv:
            result = _fuse_traced(module, path, sequentials, handled)
    done[id(module)] = result
    for name, child in list(result.named_children()):
        fused = _fuse_tree(child, f"{path}.{name}" if path else name, handled, done)
        if fused is not child:
            setattr(result, name, fused)
    return result


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with each conv -> [bn] -> [+ residual] -> [activation] chain in one
    ConvBNAct2d (see the module docstring for the chains, where they are found, and when a
    module's forward is rewritten through torch.fx).

    inplace=False (default, as torch.ao.quantization.fuse_modules): a deep copy is fused and
    returned, ``model`` is untouched. inplace=True: ``model`` itself is fused and returned
    (a model that is itself rewritten is returned as a new FusedGraphModule sharing its
    parts). Accepts torch's modules and cnn's. Parameters, buffers and training flags carry
    over; the fused model gives the unfused one's results in training and evaluation.
    """
    if not inplace:
        model = copy.deepcopy(model)
    return _fuse_tree(model, "", set(), {})


__all__ = ["fuse", "FusedGraphModule"]

"""Every convolution kernel the compile check builds: layer x layout x dtype x pass, each made by
the launcher's own ``launch_arguments`` on meta tensors (no memory), so the signature and
constants are those of the kernel a launch on that layer would run.

    layers    LAYERS: the example layer (ResNet 3x3 64->64 on 56x56, batch 32; it also stands
              for ResNet-18's first stage), both MNIST convs at batch 64, ResNet-18's 7x7/2 stem,
              one 3x3 layer of stages 2-4, the 1x1/2 downsample, a depthwise 3x3
    layouts   channels_last; nchw; channels_last input with an NCHW weight
    dtypes    fp16, bf16, tf32 (fp32 with tl.dot in TF32); the example layer adds IEEE fp32
    passes    forward, dgrad (input gradient), wgrad (weight and bias gradient)

A launcher's last return value is its named arguments (one kernel), or a list of them, or a list
of ``(kernel, ..., args)`` (several kernels per launch, e.g. a split reduction and its
finalize); the kernel of a bare argument dict is the module's kernel whose parameters it names.
Arguments are specialised as Triton's launcher specialises them (``launch_signature``).

Autotune configs: the example layer compiles every config its autotuner keeps after the
kernel's own pruning; the other layers, variants and layouts the first kept config (the cost
of a regeneration grows with layers x layouts x dtypes, the tile choice matters on one).
"""
import ast
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernels.conv2d.geometry import Conv2dGeometry
from kernels.conv2d.layout import conversion_bytes, is_channels_last_dense

# Multiprocessors of an H100/H200: the weight gradients split their reduction as they do there.
EXAMPLE_MULTIPROCESSORS = 132

# Scalar type of each pointer, by the torch dtype a launcher passes.
_POINTER_TYPES = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32",
                  "float64": "*fp64", "int64": "*i64", "int32": "*i32", "int8": "*i8",
                  "uint8": "*u8", "bool": "*i1"}


@dataclass(frozen=True)
class Layer:
    """conv2d(x: (batch, c_in, h, w), weight: (c_out, c_in/groups, kernel, kernel))."""

    name: str
    batch: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False
    every_config: bool = False  # compile every autotune config (the example layer)

    def geometry(self) -> Conv2dGeometry:
        p = self.padding
        return Conv2dGeometry.from_shapes(
            (self.batch, self.c_in, self.h, self.w),
            (self.c_out, self.c_in // self.groups, self.kernel, self.kernel),
            (self.stride, self.stride), (p, p, p, p), (1, 1), self.groups)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c_in


EXAMPLE = Layer("example.resnet.3x3.b32", 32, 64, 56, 56, 64, 3, 1, 1, bias=True,
                every_config=True)
LAYERS = [
    EXAMPLE,
    Layer("mnist.conv1.b64", 64, 1, 28, 28, 32, 3, 1, 1, bias=True),
    Layer("mnist.conv2.b64", 64, 32, 14, 14, 64, 3, 1, 1, bias=True),
    Layer("resnet18.stem7x7s2.b32", 32, 3, 224, 224, 64, 7, 2, 3),
    Layer("resnet18.layer2.3x3.b32", 32, 128, 28, 28, 128, 3, 1, 1),
    Layer("resnet18.layer3.3x3.b32", 32, 256, 14, 14, 256, 3, 1, 1),
    Layer("resnet18.layer4.3x3.b32", 32, 512, 7, 7, 512, 3, 1, 1),
    Layer("resnet18.down1x1s2.b32", 32, 64, 56, 56, 128, 1, 2, 0),
    Layer("depthwise.3x3.b32", 32, 128, 56, 56, 128, 3, 1, 1, groups=128, bias=True),
]

# (name, input channels_last, weight channels_last). The fast layout first.
LAYOUTS = [("channels_last", True, True), ("nchw", False, False),
           ("channels_last+nchw_weight", True, False)]
# (name, torch dtype, tl.dot input precision). fp16 first: --quick takes each kernel's first.
DTYPES = [("fp16", torch.float16, "ieee"), ("bf16", torch.bfloat16, "ieee"),
          ("tf32", torch.float32, "tf32")]
EXAMPLE_ONLY_DTYPES = [("fp32", torch.float32, "ieee")]
PASSES = ("forward", "dgrad", "wgrad")
# The example layer's extra forward epilogues (first kept config only).
FORWARD_EPILOGUES = ("stats", "bn_eval+relu")
# Where every config is compiled: the base variant of the example layer in these layouts/dtypes.
EVERY_CONFIG_LAYOUTS = ("channels_last", "nchw")
EVERY_CONFIG_DTYPES = ("fp16", "bf16", "tf32")


@dataclass
class Case:
    """One kernel variant to compile, and what the report needs to read it."""

    module: str           # the module defining the kernel (its source hash keys the cache)
    kernel: object        # the @triton.jit function, possibly wrapped (autotune, heuristics)
    label: str            # e.g. "forward", "forward stats", "dgrad"
    signature: dict       # non-constexpr argument -> Triton type ("*fp16", "i32:16", ...)
    constexprs: dict      # constexpr argument -> value
    layer: str = "-"
    layout: str = "-"
    dtype: str = "-"
    conv_pass: str = "-"
    configs: str = "all"  # "all" autotune configs kept, or "first"
    gemm: tuple = None    # (M, N, K) of the GEMM view, for the reference; None: no tl.dot
    min_bytes: int = 0    # the pass's own minimum traffic: each operand read once, result once
    conversion_bytes: int = 0  # bytes its layout conversions move (see kernels.conv2d.layout)
    pruned_configs: list = field(default=None, repr=False)  # configs the autotuner keeps


def unwrap(kernel):
    """(JITFunction, autotune configs or [None], names a heuristic must get from constexprs)."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    configs, heuristic_names, obj = [None], [], kernel
    while not isinstance(obj, JITFunction):
        if isinstance(obj, Autotuner):
            configs = list(obj.configs)
        elif isinstance(obj, Heuristics):
            heuristic_names += list(obj.values)
        if not hasattr(obj, "fn"):
            raise TypeError(f"{kernel!r} is not a @triton.jit function or a wrapper of one")
        obj = obj.fn
    return obj, configs, heuristic_names


def kept_configs(kernel, args: dict):
    """The autotune configs ``kernel`` keeps for the launch ``args`` after its own
    ``early_config_prune`` (as a launch with keyword arguments calls it), or [None]."""
    from triton.runtime.autotuner import Autotuner

    obj = kernel
    while not isinstance(obj, Autotuner):
        obj = getattr(obj, "fn", None)
        if obj is None:
            return [None]
    configs = list(obj.configs)
    if obj.early_config_prune:
        configs = list(obj.early_config_prune(configs, {}, **args)) or configs
    return configs


def launch_signature(kernel, args, overrides=None):
    """(signature, constexprs) of ``kernel`` for the named launch arguments ``args``, typed the
    way Triton's launcher specialises them, so the compile matches what runs:
        tensor                    pointer of its dtype, 16-byte aligned (as torch allocates)
        int equal to 1            the constexpr 1 (a unit stride, padding or dilation of 1)
        int divisible by 16       "i32:16" (i64 past int32): known divisibility, which lets
                                  contiguous offsets become vector loads
        other int / float         i32 (i64) / fp32
    ``args`` holds the kernel's constexprs too; ``overrides`` replaces those of them the kernel
    has (e.g. the tl.dot precision, which a launcher on a CPU would choose for the interpreter).
    """
    fn = unwrap(kernel)[0]
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    signature, constexprs = {}, {}
    for name, value in args.items():
        if name in constexpr_names:
            constexprs[name] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = _POINTER_TYPES[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool) or value is None:
            raise TypeError(f"argument {name!r} = {value!r} should be a tl.constexpr")
        elif isinstance(value, int) and value == 1:
            constexprs[name] = 1
        elif isinstance(value, int):
            width = "i32" if -2**31 <= value < 2**31 else "i64"
            signature[name] = width + (":16" if value % 16 == 0 else "")
        else:
            signature[name] = "fp32"
    constexprs.update({k: v for k, v in (overrides or {}).items() if k in constexpr_names})
    return signature, constexprs


def module_kernels(module) -> list:
    """The @triton.jit kernels (possibly wrapped) a module defines at top level."""
    import triton

    return [v for v in vars(module).values() if isinstance(v, triton.runtime.KernelInterface)
            and getattr(unwrap(v)[0], "__module__", None) == module.__name__]


def match_kernel(module, args: dict):
    """The kernel of ``module`` whose parameters ``args`` names (every argument a parameter;
    the most parameters covered wins)."""
    best, best_cover = None, -1
    for kernel in module_kernels(module):
        params = {p.name for p in unwrap(kernel)[0].params}
        if set(args) <= params and len(params & set(args)) > best_cover:
            best, best_cover = kernel, len(params & set(args))
    if best is None:
        raise ValueError(f"no kernel in {module.__name__} takes the arguments "
                         f"{sorted(args)[:8]}...")
    return best


def launches(module, result) -> list:
    """[(kernel, args)] from a launcher's return value (see the module docstring)."""
    last = result[-1]
    items = [last] if isinstance(last, dict) else list(last)
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((match_kernel(module, item), item))
        else:
            out.append((item[0], item[-1]))
    return out


def _tensor(shape, dtype, channels_last: bool):
    layout = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, device="meta", dtype=dtype, memory_format=layout)


def _same_memory(a, b) -> bool:
    return a is b or getattr(a, "_base", None) is b or getattr(b, "_base", None) is a


def converted_bytes(user_tensors, args: dict) -> int:
    """Bytes ``kernels.conv2d.layout.conversion_bytes`` counts for the caller's tensors that the
    kernels do not read or write in place (no pointer argument is that tensor or a view of it): the
    launcher copies those into the kernel's layout (or its result back to the caller's)."""
    kernel_tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
    moved = [t for t in user_tensors if t is not None
             and not any(_same_memory(t, k) for k in kernel_tensors)]
    return conversion_bytes(*moved)


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _gemm(layer: Layer, conv_pass: str):
    """(M, N, K) of the pass's GEMM view (per group; dgrad: per stride phase)."""
    g = layer.geometry()
    taps = g.kernel_h * g.kernel_w
    if conv_pass == "forward":
        return (g.batch * g.out_h * g.out_w, g.out_per_group, taps * g.in_per_group)
    if conv_pass == "dgrad":
        s = layer.stride
        return (g.batch * -(-g.height // s) * -(-g.width // s), g.in_per_group,
                -(-g.kernel_h // s) * -(-g.kernel_w // s) * g.out_per_group)
    return (g.out_per_group, taps * g.in_per_group, g.batch * g.out_h * g.out_w)


def _implicit_gemm_launch(layer, conv_pass, x, weight, bias, epilogue):
    """(module name, launcher result, caller's tensors, minimum bytes) of one pass."""
    import importlib

    g = layer.geometry()
    y_layout = torch.channels_last if any(is_channels_last_dense(t) and t.dim() == 4
                                          for t in (x, weight)) else torch.contiguous_format
    dy = torch.empty(g.output_shape, device="meta", dtype=x.dtype, memory_format=y_layout)
    if layer.depthwise:
        module = importlib.import_module("kernels.conv2d.depthwise")
        if conv_pass == "forward":
            result = module.forward_launch_arguments(x, weight, bias, g)
        elif conv_pass == "dgrad":
            result = module.input_grad_launch_arguments(dy, weight, x, g)
        else:
            result = module.weight_grad_launch_arguments(dy, x, weight, g, need_bias=bias
                                                         is not None,
                                                         sm_count=EXAMPLE_MULTIPROCESSORS)
    elif conv_pass == "forward":
        module = importlib.import_module("kernels.conv2d.forward")
        options = {}
        if epilogue == "stats":
            options = dict(stats=True)
        elif epilogue == "bn_eval+relu":
            running = torch.empty((layer.c_out,), device="meta", dtype=x.dtype)
            options = dict(relu=True, bn_eval=(running, running, running, running, 1e-5))
        result = module.launch_arguments(x, weight, bias, g, **options)
    elif conv_pass == "dgrad":
        module = importlib.import_module("kernels.conv2d.input_grad")
        result = module.launch_arguments(dy, weight, x, g)
    else:
        module = importlib.import_module("kernels.conv2d.weight_grad")
        result = module.launch_arguments(dy, x, weight, g, need_bias=bias is not None,
                                         sm_count=EXAMPLE_MULTIPROCESSORS)
    if conv_pass == "forward":
        users, minimum = (x, weight, result[0]), _nbytes(x, weight, bias, dy)
    elif conv_pass == "dgrad":
        users, minimum = (dy, weight, result[0]), _nbytes(dy, weight, x)
    else:  # the fp32 partial sums are the kernels' own scratch, not the caller's dw
        users, minimum = (dy, x), _nbytes(dy, x, weight, bias)
    return module, result, users, minimum


def _variants():
    """(layer, layout, dtype, conv pass, epilogue) of every case, in report order."""
    for layer in LAYERS:
        dtypes = DTYPES + (EXAMPLE_ONLY_DTYPES if layer.every_config else [])
        for layout in LAYOUTS:
            for dtype in dtypes:
                for conv_pass in PASSES:
                    yield layer, layout, dtype, conv_pass, ""
                    if layer.every_config and conv_pass == "forward" and not layer.depthwise:
                        for epilogue in FORWARD_EPILOGUES:
                            yield layer, layout, dtype, conv_pass, epilogue


def conv_cases() -> list:
    """Every convolution Case (see the module docstring)."""
    import triton.language as tl

    cases = []
    for layer, (layout, x_cl, w_cl), (dtype, torch_dtype, precision), conv_pass, epilogue \
            in _variants():
        x = _tensor((layer.batch, layer.c_in, layer.h, layer.w), torch_dtype, x_cl)
        weight = _tensor((layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel),
                         torch_dtype, w_cl)
        bias = torch.empty((layer.c_out,), device="meta", dtype=torch_dtype) \
            if layer.bias else None
        module, result, users, minimum = _implicit_gemm_launch(layer, conv_pass, x, weight,
                                                               bias, epilogue)
        kernel_launches = launches(module, result)
        moved = converted_bytes(users, {f"{i}.{k}": v for i, (_, a) in
                                        enumerate(kernel_launches) for k, v in a.items()})
        every = (layer.every_config and not epilogue and layout in EVERY_CONFIG_LAYOUTS
                 and dtype in EVERY_CONFIG_DTYPES)
        for kernel, args in kernel_launches:
            sig, consts = launch_signature(kernel, args, dict(
                ACC_DTYPE=tl.float32, INPUT_PRECISION=precision, UPCAST=False))
            if "INPUT_PRECISION" in args:  # prune as a launch with this precision would
                args = dict(args, INPUT_PRECISION=precision)
            fn_name = unwrap(kernel)[0].__name__
            uses_dot = not layer.depthwise and "INPUT_PRECISION" in consts
            cases.append(Case(
                module=unwrap(kernel)[0].__module__, kernel=kernel,
                label=" ".join(filter(None, (conv_pass, epilogue))) if len(kernel_launches) == 1
                else f"{conv_pass} {fn_name}",
                signature=sig, constexprs=consts, layer=layer.name, layout=layout, dtype=dtype,
                conv_pass=conv_pass, configs="all" if every else "first",
                gemm=_gemm(layer, conv_pass) if uses_dot else None,
                min_bytes=minimum, conversion_bytes=moved,
                pruned_configs=kept_configs(kernel, args)))
    return cases


# ---- source hashes: a saved report is stale per kernel module, not as a whole --------------

_REPO = Path(__file__).resolve().parent.parent.parent


def _source(module: str) -> Path:
    """The file of a dotted module name of this repository (a package is its __init__.py)."""
    base = _REPO.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def local_imports(module: str) -> set:
    """The modules of this repository's kernels/ that a module imports (relative, or as
    ``kernels.x``), as dotted names."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                parent = f"{base}.{node.module}" if node.module else base
                names.add(parent)
                names.update(f"{parent}.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("kernels"):
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("kernels"))
    return {n for n in names if n.startswith("kernels") and _source(n).exists()}


@functools.lru_cache(maxsize=None)
def module_hash(module: str) -> str:
    """sha256 of a kernel module's source and of every kernels module it imports, transitively
    (a helper such as runtime.py or configs.py changes what its users compile)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(local_imports(name))
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(name.encode())
        h.update(_source(name).read_bytes())
    return h.hexdigest()[:16]


__all__ = ["Layer", "LAYERS", "EXAMPLE", "LAYOUTS", "DTYPES", "PASSES", "Case", "conv_cases",
           "launch_signature", "kept_configs", "launches", "match_kernel", "unwrap",
           "module_hash", "converted_bytes", "EXAMPLE_MULTIPROCESSORS"]

"""What the static report compiles. Every case is a kernel with the arguments a launch gives it,
taken from the library's own launchers run on meta tensors (shapes only: no memory, no GPU), so
its signature and constants are those of the kernel a launch compiles (``launch_signature``).

    convolutions  ``conv_cases``: LAYERS x LAYOUTS x DTYPES x PASSES (and the example layer's
                  forward epilogues), each from its launcher's ``launch_arguments``: one kernel,
                  or several (a split reduction and its finalize)
    other ops     ``op_cases``: the public launchers of OP_CASES called on meta tensors with
                  every kernel launch recorded instead of run (``recorded_launches``), over
                  every dtype and every constexpr branch the launchers take

The full explanation of the report (what is compiled, targets, how to read and run it) is in
benchmarks/README.md.
"""
import contextlib
import functools
import importlib
import sys
from dataclasses import dataclass, field, replace

import torch
from cnn.kernels import runtime
from cnn.kernels.activation_math import NONE, RELU
from cnn.kernels.conv2d.geometry import Conv2dGeometry
from cnn.kernels.conv2d.layout import conversion_bytes, is_channels_last_dense

from benchmarks import shapes
from benchmarks.shapes import ConvShape

# Multiprocessors of an H100/H200: the weight gradients split their reduction as they do there.
EXAMPLE_MULTIPROCESSORS = 132

# Scalar type of each pointer, by the torch dtype a launcher passes.
_POINTER_TYPES = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32",
                  "float64": "*fp64", "int64": "*i64", "int32": "*i32", "int8": "*i8",
                  "uint8": "*u8", "bool": "*i1"}

CONV_MODULES = ["cnn.kernels.conv2d.forward", "cnn.kernels.conv2d.input_grad",
                "cnn.kernels.conv2d.weight_grad", "cnn.kernels.conv2d.depthwise"]
REFERENCE_MODULE = "benchmarks.static.reference_gemm"


# ---- the convolutions ------------------------------------------------------------------------

def _resnet18(name: str) -> ConvShape:
    return next(s for s in shapes.resnet18_convs() if s.name == f"resnet18.{name}.b32")


def transposed(name: str, batch: int, c_in: int, c_out: int, size: int, kernel: int,
               stride: int, padding: int = 0) -> ConvShape:
    """conv_transpose2d(x: (batch, c_in, size, size), w: (c_in, c_out, kernel, kernel)) as the
    conv2d whose input gradient it is (cnn/ops/conv_transpose2d.py): c_out -> c_in channels on
    the transposed layer's output size, same kernel, stride and padding. That conv's dgrad case
    is then the transposed layer's forward, its forward case the layer's input gradient and its
    wgrad the layer's weight gradient; no bias, since the transposed layer's bias gradient is a
    torch sum and its bias is added after the launch."""
    out = (size - 1) * stride - 2 * padding + kernel
    return ConvShape(name, batch, c_out, out, out, c_in, kernel, stride, padding, bias=False)


# The layers: benchmarks/shapes.py's, plus the example layer (ResNet-18's first-stage 3x3,
# 64->64 on 56x56 at batch 32, with a bias: every autotune config is compiled for it), a
# depthwise 3x3 and two transposed convs: U-Net's 2x2/2 up-sampling (a decoder stage, 256->128
# channels, 32x32 -> 64x64) and a DCGAN generator layer (4x4/2 pad 1, 256->128, 8x8 -> 16x16,
# DCGAN's batch of 128).
EXAMPLE = replace(_resnet18("layer1.3x3"), name="example.resnet.3x3.b32", bias=True)
LAYERS = [
    EXAMPLE,
    *shapes.mnist_convs(64),
    *(_resnet18(name) for name in ("stem7x7s2", "layer2.3x3", "layer3.3x3", "layer4.3x3",
                                   "layer2.down1x1s2")),
    ConvShape("depthwise.3x3.b32", 32, 128, 56, 56, 128, 3, 1, 1, groups=128),
    transposed("unet.up2x2s2.transposed.b16", 16, 256, 128, 32, 2, 2),
    transposed("dcgan.g4x4s2.transposed.b128", 128, 256, 128, 8, 4, 2, 1),
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
    label: str            # e.g. "forward", "forward stats", "dgrad", "relu[fp16,forward,dense]"
    signature: dict       # non-constexpr argument -> Triton type ("*fp16", "i32:16", ...)
    constexprs: dict      # constexpr argument -> value
    layer: str = "-"
    layout: str = "-"
    dtype: str = "-"
    conv_pass: str = "-"
    configs: str = "all"  # "all" autotune configs kept, or "first"
    gemm: tuple = None    # (M, N, K) of the GEMM view, for the reference; None: no tl.dot
    min_bytes: int = 0    # the pass's own minimum traffic: each operand read once, result once
    conversion_bytes: int = 0  # bytes its layout conversions move (see cnn.kernels.conv2d.layout)
    pruned_configs: list = field(default=None, repr=False)  # configs the autotuner keeps
    options: dict = field(default_factory=dict)  # the launch's num_warps etc. (no autotuner)


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
        other int / float         i32 (i64) / fp32, or the parameter's annotation
                                  (``slope: tl.float64``)
    ``args`` holds the kernel's constexprs too; ``overrides`` replaces those of them the kernel
    has (e.g. the tl.dot precision, which a launcher on a CPU would choose for the interpreter).
    """
    fn = unwrap(kernel)[0]
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    annotated = {p.name: p.annotation_type for p in fn.params if not p.is_constexpr}
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
            signature[name] = annotated.get(name) or "fp32"
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
    """[(kernel, args)] from a ``launch_arguments`` result: its last value is the named
    arguments of one kernel (the kernel of ``module`` whose parameters they name), or a list of
    them, or a list of ``(kernel, ..., args)``."""
    last = result[-1]
    items = [last] if isinstance(last, dict) else list(last)
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((match_kernel(module, item), item))
        else:
            out.append((item[0], item[-1]))
    return out


def _tensor(shape, dtype, channels_last: bool = False):
    layout = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, device="meta", dtype=dtype, memory_format=layout)


def _same_memory(a, b) -> bool:
    return a is b or getattr(a, "_base", None) is b or getattr(b, "_base", None) is a


def converted_bytes(user_tensors, args: dict) -> int:
    """Bytes ``cnn.kernels.conv2d.layout.conversion_bytes`` counts for the caller's tensors that the
    kernels do not read or write in place (no pointer argument is that tensor or a view of it): the
    launcher copies those into the kernel's layout (or its result back to the caller's)."""
    kernel_tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
    moved = [t for t in user_tensors if t is not None
             and not any(_same_memory(t, k) for k in kernel_tensors)]
    return conversion_bytes(*moved)


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def conv_geometry(layer: ConvShape) -> Conv2dGeometry:
    """The Conv2dGeometry of a layer (square kernel, stride and padding; no dilation)."""
    p = layer.padding
    return Conv2dGeometry.from_shapes(
        (layer.batch, layer.c_in, layer.h, layer.w),
        (layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel),
        (layer.stride, layer.stride), (p, p, p, p), (1, 1), layer.groups)


def _depthwise(layer: ConvShape) -> bool:
    return layer.groups > 1 and layer.groups == layer.c_in


def _gemm(layer: ConvShape, conv_pass: str):
    """(M, N, K) of the pass's GEMM view (per group; dgrad: per stride phase)."""
    g = conv_geometry(layer)
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
    g = conv_geometry(layer)
    y_layout = torch.channels_last if any(is_channels_last_dense(t) and t.dim() == 4
                                          for t in (x, weight)) else torch.contiguous_format
    dy = torch.empty(g.output_shape, device="meta", dtype=x.dtype, memory_format=y_layout)
    if _depthwise(layer):
        module = importlib.import_module("cnn.kernels.conv2d.depthwise")
        if conv_pass == "forward":
            result = module.forward_launch_arguments(x, weight, bias, g)
        elif conv_pass == "dgrad":
            result = module.input_grad_launch_arguments(dy, weight, x, g)
        else:
            result = module.weight_grad_launch_arguments(dy, x, weight, g, need_bias=bias
                                                         is not None,
                                                         sm_count=EXAMPLE_MULTIPROCESSORS)
    elif conv_pass == "forward":
        module = importlib.import_module("cnn.kernels.conv2d.forward")
        options = {}
        if epilogue == "stats":
            options = dict(stats=True)
        elif epilogue == "bn_eval+relu":
            running = torch.empty((layer.c_out,), device="meta", dtype=x.dtype)
            options = dict(activation=RELU, bn_eval=(running, running, running, running, 1e-5))
        result = module.launch_arguments(x, weight, bias, g, **options)
    elif conv_pass == "dgrad":
        module = importlib.import_module("cnn.kernels.conv2d.input_grad")
        result = module.launch_arguments(dy, weight, x, g)
    else:
        module = importlib.import_module("cnn.kernels.conv2d.weight_grad")
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
        dtypes = DTYPES + (EXAMPLE_ONLY_DTYPES if layer is EXAMPLE else [])
        for layout in LAYOUTS:
            for dtype in dtypes:
                for conv_pass in PASSES:
                    yield layer, layout, dtype, conv_pass, ""
                    if layer is EXAMPLE and conv_pass == "forward" and not _depthwise(layer):
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
        every = (layer is EXAMPLE and not epilogue and layout in EVERY_CONFIG_LAYOUTS
                 and dtype in EVERY_CONFIG_DTYPES)
        for kernel, args in kernel_launches:
            sig, consts = launch_signature(kernel, args, dict(
                ACC_DTYPE=tl.float32, INPUT_PRECISION=precision, UPCAST=False))
            if "INPUT_PRECISION" in args:  # prune as a launch with this precision would
                args = dict(args, INPUT_PRECISION=precision)
            fn_name = unwrap(kernel)[0].__name__
            uses_dot = not _depthwise(layer) and "INPUT_PRECISION" in consts
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


# ---- the other ops: their launchers run on meta tensors, each launch recorded ---------------

@contextlib.contextmanager
def recorded_launches():
    """Inside the block every launch of a kernel of the loaded ``kernels`` modules is recorded
    instead of run: yields the list that receives ``(kernel, args, options)`` per launch, with
    the kernel as launched (its autotune/heuristics wrappers included), its arguments by
    parameter name (positional ones bound as Triton binds them) and the launch options
    (num_warps, ...). The launch is intercepted where ``kernel[grid](...)`` calls ``run``, before
    any autotuning, compiling or device work."""
    import triton

    recorded, patched = [], {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("cnn.kernels.") or module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, triton.runtime.KernelInterface) and id(value) not in patched:
                patched[id(value)] = (value, value.__dict__.get("run"))
                value.run = functools.partial(_record, recorded, value)
    try:
        yield recorded
    finally:
        for kernel, original in patched.values():
            if original is None:
                del kernel.run
            else:
                kernel.run = original


def _record(recorded, kernel, *args, grid=None, warmup=False, **kwargs):
    fn = unwrap(kernel)[0]
    named = dict(zip(fn.arg_names, args, strict=False))
    named.update({k: v for k, v in kwargs.items() if k in fn.arg_names})
    for p in fn.params:
        if p.name not in named and p.has_default:
            named[p.name] = p.default
    options = {k: v for k, v in kwargs.items() if k not in fn.arg_names}
    recorded.append((kernel, named, options))


# The tensors the op cases run on: ResNet-18's stem output (benchmarks/shapes.py; its 3x3
# stride-2 pad-1 max pool is the window pooling), the input of its head's adaptive pool to 1x1,
# and the stem pool at a batch whose output passes 2**31 elements (the int64-index variants).
STEM = shapes.resnet18_activations()[0]
HEAD, HEAD_OUTPUT = (32, 512, 7, 7), (1, 1)
INT64_BATCH = 16384
DIVISOR_OVERRIDE = 9  # avg pooling's divisor_override variant
# The dtypes each family covers, in its report order (fp16 first where --quick should take it).
POOL_DTYPES = [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32),
               ("fp64", torch.float64)]
FP32_FIRST_DTYPES = [("fp32", torch.float32), ("fp16", torch.float16),
                     ("bf16", torch.bfloat16), ("fp64", torch.float64)]


def _activation(dtype, flat: bool = True, channels_last: bool = False):
    """STEM's tensor; not flat: a view one column narrower than its storage (h and w do not
    merge into one axis), channels_last (batch norm's strided tiles) or NCHW."""
    n, c, h, w = STEM.batch, STEM.channels, STEM.h, STEM.w
    if flat:
        return _tensor((n, c, h, w), dtype, channels_last)
    return _tensor((n, c, h, w + 1), dtype, channels_last)[..., :w]


def _pool_geometry(adaptive: bool, index_64: bool = False):
    from cnn.kernels.pool2d.geometry import Pool2dGeometry

    if adaptive:
        return Pool2dGeometry.adaptive_pool(HEAD, HEAD_OUTPUT)
    k, s, p = STEM.kernel, STEM.stride, STEM.padding
    batch = INT64_BATCH if index_64 else STEM.batch
    return Pool2dGeometry.window((batch, STEM.channels, STEM.h, STEM.w), (k, k), (s, s), (p, p),
                                 (1, 1), False)


def _like(dtype, channels_last: bool) -> dict:
    return dict(dtype=dtype, device="meta",
                memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _max_pool2d_launches():
    """Every dtype for window pooling on NCHW and adaptive pooling on channels_last, and the
    int64-index variant (forward without indices)."""
    from cnn.kernels.pool2d.max_pool2d import max_pool2d_backward, max_pool2d_forward

    for ty, dtype in POOL_DTYPES:
        for adaptive, channels_last, index_64 in ((False, False, False), (True, True, False),
                                                  (False, False, True)):
            if index_64 and ty != "fp32":
                continue
            kind = ("adaptive,channels_last" if adaptive else "window,nchw") \
                + (",int64" if index_64 else "")
            g = _pool_geometry(adaptive, index_64)
            x = _tensor(g.input_shape, dtype, channels_last)
            dy = _tensor(g.output_shape, dtype, channels_last)
            indices = _tensor(g.output_shape, torch.int64, channels_last)
            yield f"forward[{ty},{kind}]", functools.partial(
                max_pool2d_forward, x, g, store_indices=not index_64)
            yield f"backward[{ty},{kind}]", functools.partial(
                max_pool2d_backward, dy, indices, g, _like(dtype, channels_last))


def _avg_pool2d_launches():
    """Every dtype for window pooling (count_include_pad, NCHW) and adaptive pooling
    (channels_last); fp32 also for the other divisors and the int64-index variant."""
    from cnn.kernels.pool2d.avg_pool2d import avg_pool2d_backward, avg_pool2d_forward

    variants = [  # (label, adaptive, count_include_pad, divisor_override, channels_last, int64)
        ("window,include_pad,nchw", False, True, None, False, False),
        ("adaptive,channels_last", True, False, None, True, False),
    ]
    fp32_only = [
        ("window,exclude_pad,channels_last", False, False, None, True, False),
        ("window,divisor_override,nchw", False, True, DIVISOR_OVERRIDE, False, False),
        ("window,include_pad,nchw,int64", False, True, None, False, True),
    ]
    for ty, dtype in POOL_DTYPES:
        for kind, adaptive, include_pad, divisor, channels_last, index_64 in \
                variants + (fp32_only if ty == "fp32" else []):
            g = _pool_geometry(adaptive, index_64)
            x = _tensor(g.input_shape, dtype, channels_last)
            dy = _tensor(g.output_shape, dtype, channels_last)
            yield f"forward[{ty},{kind}]", functools.partial(
                avg_pool2d_forward, x, g, include_pad, divisor)
            yield f"backward[{ty},{kind}]", functools.partial(
                avg_pool2d_backward, dy, g, _like(dtype, channels_last), include_pad, divisor)


def _channel_tensors(dtype):
    """(mean, scale, weight, bias, num_batches_tracked) of STEM's channels: statistics in
    their dtype, the affine parameters in the input's."""
    from cnn.kernels.batch_norm.forward import stats_dtype

    c = STEM.channels
    stats = _tensor((c,), stats_dtype(dtype))
    return (stats, stats, _tensor((c,), dtype), _tensor((c,), dtype),
            _tensor((), torch.int64))


def _partials(dtype, rows: int):
    """Per-tile partials (tiles, rows, C) of batch_norm_stats (rows 3) or the backward's
    reduce (rows 2) over STEM."""
    from cnn.kernels.batch_norm.forward import stats_dtype, tile_config

    block_hw, _ = tile_config(_activation(dtype))
    tiles = STEM.batch * -(-(STEM.h * STEM.w) // block_hw)
    return _tensor((tiles, rows, STEM.channels), stats_dtype(dtype))


def _batch_norm_forward_launches():
    """Statistics and normalize (training with ReLU, evaluation from the running variance)
    for flat (NCHW) and strided (channels_last, h and w not mergeable) tiles; finalize with
    momentum and cumulative; every dtype."""
    from cnn.kernels.batch_norm.forward import (
        batch_norm_finalize,
        batch_norm_normalize,
        batch_norm_stats,
    )

    for ty, dtype in FP32_FIRST_DTYPES:
        mean, scale, weight, bias, nbt = _channel_tensors(dtype)
        for flat in (True, False):
            kind = "flat" if flat else "strided"
            x = _activation(dtype, flat, channels_last=not flat)
            out = _tensor(x.shape, dtype, channels_last=not flat)
            yield f"batch_norm_stats[{ty},{kind}]", functools.partial(batch_norm_stats, x)
            for from_var, relu in ((False, True), (True, False)):
                yield (f"batch_norm_normalize[{ty},{kind},from_var={from_var},relu={relu}]",
                       functools.partial(batch_norm_normalize, x, out, mean, scale, weight, bias,
                                         eps=1e-5, from_var=from_var,
                                         activation=RELU if relu else NONE,
                                         num_batches_tracked=None if from_var else nbt))
        stats = _partials(dtype, 3)
        sty = str(stats.dtype).replace("torch.float", "fp")
        for cumulative in (False, True):
            yield (f"batch_norm_finalize[{sty},cumulative={cumulative}]",
                   functools.partial(batch_norm_finalize, stats, _tensor((STEM.channels,), dtype),
                                     _tensor((STEM.channels,), dtype), nbt,
                                     momentum=None if cumulative else 0.1, eps=1e-5))


def _batch_norm_backward_launches():
    """Reduce (training with the ReLU mask, evaluation without) and input gradient (training,
    evaluation) for flat and strided tiles, and the sums; every dtype."""
    from cnn.kernels.batch_norm.backward import (
        batch_norm_backward_input,
        batch_norm_backward_reduce,
        batch_norm_backward_sums,
    )

    for ty, dtype in FP32_FIRST_DTYPES:
        mean, scale, weight, bias, _ = _channel_tensors(dtype)
        sums = _tensor((2, STEM.channels), mean.dtype)
        for flat in (True, False):
            kind = "flat" if flat else "strided"
            dy, x, dx = (_activation(dtype, flat, channels_last=not flat) for _ in range(3))
            # The labels keep the former relu_mask flag (1: ReLU) so results stay comparable.
            for from_var, relu_mask in ((False, 1), (True, 0)):
                yield (f"batch_norm_backward_reduce[{ty},{kind},from_var={from_var},"
                       f"relu_mask={relu_mask}]",
                       functools.partial(batch_norm_backward_reduce, dy, x, mean, scale, weight,
                                         bias, eps=1e-5, from_var=from_var,
                                         activation=RELU if relu_mask else NONE))
            for training, from_var, relu_mask in ((True, False, 1), (False, True, 1)):
                yield (f"batch_norm_backward_input[{ty},{kind},training={training},"
                       f"relu_mask={relu_mask}]",
                       functools.partial(batch_norm_backward_input, dy, x, dx, mean, scale,
                                         weight, bias, sums if training else None, eps=1e-5,
                                         from_var=from_var, activation=RELU,
                                         training=training))
        yield f"batch_norm_backward_sums[{ty}]", functools.partial(
            batch_norm_backward_sums, _partials(dtype, 2), weight, bias, need_weight=True,
            need_bias=True)


def _batch_norm_merge_launches():
    """The merge of STEM's partials into one row, in both statistics dtypes."""
    from cnn.kernels.batch_norm.merge import batch_norm_merge_stats

    for sty, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        yield f"batch_norm_merge[{sty}]", functools.partial(batch_norm_merge_stats,
                                                            _partials(dtype, 3))


def _batch_norm_running_launches():
    """The running-statistics update from a batch's (mean, var), with a momentum and
    cumulative, in both statistics dtypes (running stats in the model's dtype)."""
    from cnn.kernels.batch_norm.running import batch_norm_update_stats

    for sty, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        mean, var, running_mean, running_var, nbt = _channel_tensors(dtype)
        for cumulative in (False, True):
            yield (f"batch_norm_update_stats[{sty},cumulative={cumulative}]",
                   functools.partial(batch_norm_update_stats, running_mean, running_var, nbt,
                                     mean=mean, var=var,
                                     momentum=None if cumulative else 0.1))


def _relu_launches():
    """Forward and backward, dense (flat storage) and strided, every dtype."""
    from cnn.kernels.relu import relu_backward, relu_forward

    for ty, dtype in FP32_FIRST_DTYPES:
        for backward in (False, True):
            for dense in (True, False):
                label = (f"relu[{ty},{'backward' if backward else 'forward'},"
                         f"{'dense' if dense else 'strided'}]")
                x = _activation(dtype, flat=dense)
                if backward:
                    yield label, functools.partial(relu_backward, _activation(dtype), x)
                else:
                    yield label, functools.partial(relu_forward, x)


def _activation_launches():
    """Each standalone activation forward and backward (fp32, fp16) and its second derivative
    (fp32), dense; the strided walk and fp64 for GELU's tanh form (the longest)."""
    from cnn.kernels.activation import (
        activation_backward,
        activation_forward,
        activation_second_grad,
    )
    from cnn.kernels.activation_math import ACTIVATIONS

    passes = (("forward", lambda x, act: activation_forward(x, act, 0.01)),
              ("backward", lambda x, act: activation_backward(_activation(x.dtype), x, act, 0.01)),
              ("second", lambda x, act: activation_second_grad(_activation(x.dtype), x, act, 0.01)))
    for name in ("relu6", "leaky_relu", "silu", "hardswish", "gelu", "gelu_tanh"):
        variants = [("fp32", torch.float32, True), ("fp16", torch.float16, True)]
        if name == "gelu_tanh":
            variants += [("fp64", torch.float64, True), ("fp32", torch.float32, False)]
        for ty, dtype, dense in variants:
            for label, launch in passes:
                if label == "second" and ty == "fp16":
                    continue
                yield (f"activation[{name},{ty},{label},{'dense' if dense else 'strided'}]",
                       functools.partial(launch, _activation(dtype, flat=dense),
                                         ACTIVATIONS[name]))


def _conv_act_launches():
    """The fused conv + activation backward's gradient through the activation (and into the
    residual): ReLU and SiLU (a mask, a smooth function) in every dtype, NCHW and channels_last;
    the residual-only pass without an activation."""
    from cnn.kernels.activation_math import ACTIVATIONS
    from cnn.kernels.conv_bn_act import gated_gradient

    for ty, dtype in FP32_FIRST_DTYPES:
        for name in ("relu", "silu"):
            for channels_last in (False, True):
                pre = _activation(dtype, channels_last=channels_last)
                yield (f"gated_gradient[{name},{ty},{'nhwc' if channels_last else 'nchw'}]",
                       functools.partial(gated_gradient, _activation(dtype), pre,
                                         activation=ACTIVATIONS[name],
                                         residual_grad=torch.empty_like(pre)))
        grad = _activation(dtype)
        yield (f"gated_gradient[none,{ty},residual only]",
               functools.partial(gated_gradient, grad, grad, activation=ACTIVATIONS["none"],
                                 need_g=False, residual_grad=torch.empty_like(grad)))


# module -> the launches of its cases, each (label, a call of a public launcher that launches
# one kernel of the module), in report order.
OP_CASES = {
    "cnn.kernels.pool2d.max_pool2d": _max_pool2d_launches,
    "cnn.kernels.pool2d.avg_pool2d": _avg_pool2d_launches,
    "cnn.kernels.batch_norm.forward": _batch_norm_forward_launches,
    "cnn.kernels.batch_norm.backward": _batch_norm_backward_launches,
    "cnn.kernels.relu": _relu_launches,
    "cnn.kernels.activation": _activation_launches,
    "cnn.kernels.conv_bn_act": _conv_act_launches,
    "cnn.kernels.batch_norm.merge": _batch_norm_merge_launches,
    "cnn.kernels.batch_norm.running": _batch_norm_running_launches,
}
KERNEL_MODULES = CONV_MODULES + list(OP_CASES)


def _dtype_of(signature, constexprs) -> str:
    """Display dtype of an op case: its first pointer's element type, 'tf32' for TF32 dots."""
    first = next((t for t in signature.values() if t.startswith("*")), "-")
    return "tf32" if constexprs.get("INPUT_PRECISION") == "tf32" else first.lstrip("*")


def op_cases() -> list:
    """Every Case of OP_CASES: one per launcher call, from the one launch it makes."""
    cases = []
    for module in OP_CASES:
        importlib.import_module(module)
    with recorded_launches() as recorded:
        for module, launchers in OP_CASES.items():
            for label, launch in launchers():
                done = len(recorded)
                launch()
                if len(recorded) != done + 1:
                    raise RuntimeError(f"{module} {label}: {len(recorded) - done} launches, "
                                       "expected one")
                kernel, args, options = recorded[-1]
                fn = unwrap(kernel)[0]
                if fn.__module__ != module:
                    raise RuntimeError(f"{module} {label} launched {fn.__module__}.{fn.__name__}")
                signature, constexprs = launch_signature(kernel, args)
                cases.append(Case(module=module, kernel=kernel, label=label, signature=signature,
                                  constexprs=constexprs, dtype=_dtype_of(signature, constexprs),
                                  pruned_configs=kept_configs(kernel, args), options=options))
    return cases


@functools.lru_cache(maxsize=None)
def all_cases() -> tuple:
    """Every Case: the convolutions', then the other ops', in a fixed order (the compile
    workers rebuild the same list and find their case by index). Needs the kernels decorated
    for the GPU (TRITON_INTERPRET=0): the interpreter's launchers pick other blocks."""
    if runtime.INTERPRET:
        raise RuntimeError("the static cases need TRITON_INTERPRET=0 (the kernels' GPU path)")
    return tuple(conv_cases() + op_cases())


def registered_kernels() -> dict:
    """module -> the kernel names its cases list (before any filter)."""
    out = {}
    for case in all_cases():
        out.setdefault(case.module, set()).add(unwrap(case.kernel)[0].__name__)
    return {m: sorted(names) for m, names in out.items()}


__all__ = ["LAYERS", "EXAMPLE", "LAYOUTS", "DTYPES", "PASSES", "Case", "conv_cases", "op_cases",
           "all_cases", "registered_kernels", "recorded_launches", "launch_signature",
           "kept_configs", "launches", "match_kernel", "unwrap", "converted_bytes", "conv_geometry",
           "EXAMPLE_MULTIPROCESSORS", "CONV_MODULES", "KERNEL_MODULES", "OP_CASES",
           "REFERENCE_MODULE"]

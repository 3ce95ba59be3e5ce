"""The benchmark entries: each builds its inputs once and returns our callable and torch's.

Ours are the public names (``cnn.functional.conv2d``, ``max_pool2d``, ``avg_pool2d``,
``batch_norm``, ``relu``, ``cnn.ConvBNReLU2d``), torch's their torch.nn.functional / nn twins.
A pass is isolated by choosing what requires grad and timing ``torch.autograd.grad`` on a
retained graph: 'dgrad' times only the input gradient, 'wgrad' only weight and bias gradients,
on both sides. A name that does not exist yet raises ``MissingOp``: the row fails, loudly.
"""
import copy
import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import roofline
from .shapes import ConvShape, TensorShape

TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
                "bf16": torch.bfloat16}
DTYPES = tuple(TORCH_DTYPES)
LAYOUTS = ("nchw", "channels_last")
# Relative error (L2 norm of the difference / L2 norm of torch's result) a row may show: both
# sides accumulate in fp32, so what is left is rounding of inputs/outputs and TF32 products.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}


class MissingOp(RuntimeError):
    """An op the benchmarks measure is not in the package (yet)."""


def ours(path: str):
    """``ours('cnn.functional.batch_norm')``: the attribute, or MissingOp saying what is missing."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingOp(f"{module_name} cannot be imported ({exc}), so {path} cannot be "
                        "benchmarked") from exc
    if not hasattr(module, attr):
        raise MissingOp(f"{path} does not exist: the op has not landed, so it cannot be "
                        "benchmarked")
    return getattr(module, attr)


@dataclass(frozen=True)
class Bench:
    """One row: op and pass on a shape, dtype and layout, with its roofline arithmetic."""

    op: str          # e.g. 'conv2d.dgrad'
    shape: object    # ConvShape or TensorShape
    dtype: str       # fp32 | tf32 | fp16 | bf16
    layout: str      # nchw | channels_last

    @property
    def family(self) -> str:
        return self.op.split(".")[0]

    @property
    def flops(self) -> int:
        if not isinstance(self.shape, ConvShape):
            return 0
        passes = 3 if self.op.endswith("fwd+bwd") else 1
        return passes * roofline.conv_flops(self.shape)

    @property
    def nbytes(self) -> int:
        s, d = self.shape, self.dtype
        if self.family == "conv2d":
            return roofline.conv_bytes(s, d, self.op.split(".", 1)[1])
        if self.family == "conv_bn_relu":
            conv_pass = "fwd+bwd" if self.op.endswith("fwd+bwd") else "fwd"
            return roofline.conv_bytes(s, d, conv_pass)
        if self.family in ("max_pool2d", "avg_pool2d"):
            return roofline.pool_bytes(s, d)
        if self.family == "relu":
            return roofline.elementwise_bytes(s, d, 2)
        if self.family == "batch_norm":
            return roofline.elementwise_bytes(s, d, 3 if self.op.endswith("bwd") else 2)
        raise ValueError(self.op)

    def make(self, device):
        """(ours, torch's, compare): two zero-argument callables and a function of their
        results giving the relative error."""
        with dtype_context(self.dtype):
            return BUILDERS[self.family](self, device)


class dtype_context:
    """TF32 on for 'tf32', off otherwise, for cuDNN, cuBLAS and our kernels (which read
    torch.backends.cudnn.allow_tf32 at launch); restored on exit."""

    def __init__(self, dtype: str):
        self.tf32 = dtype == "tf32"

    def __enter__(self):
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.tf32

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def relative_error(a, b, scales=None) -> float:
    """max over the pairs of ||a - b|| / ||b||, in fp64; ``scales[i]``, when given, replaces
    ||b|| for pair i (for a result that is zero in exact arithmetic, see conv_bn_relu)."""
    if isinstance(a, torch.Tensor):
        a, b = (a,), (b,)
    err = 0.0
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = x.detach().double(), y.detach().double()
        scale = scales[i] if scales and scales[i] is not None else y
        err = max(err, float((x - y).norm() / scale.detach().double().norm().clamp_min(1e-30)))
    return err


def _grad_runner(forward, inputs, grad_of, layout):
    """A callable running only the backward of ``forward`` with respect to ``grad_of``, on a
    retained graph; dy is drawn from a fixed seed, so both sides get the same one."""
    out = forward(*inputs)
    gen = torch.Generator(device=out.device).manual_seed(1)
    dy = _layout(torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype),
                 layout)
    return lambda: torch.autograd.grad(out, grad_of, dy, retain_graph=True)


def _fixed_randn(shape, device, dtype, layout):
    gen = torch.Generator(device=device).manual_seed(1)
    return _layout(torch.randn(shape, generator=gen, device=device, dtype=dtype), layout)


def _build_conv(b: Bench, device):
    s: ConvShape = b.shape
    dt = TORCH_DTYPES[b.dtype]
    x = _layout(torch.randn(s.batch, s.c_in, s.h, s.w, device=device, dtype=dt), b.layout)
    w = _layout(torch.randn(s.c_out, s.c_in, s.kernel, s.kernel, device=device, dtype=dt)
                / (s.c_in * s.kernel * s.kernel) ** 0.5, b.layout)
    bias = torch.randn(s.c_out, device=device, dtype=dt) if s.bias else None
    conv_ours = ours("cnn.functional.conv2d")
    kw = dict(stride=s.stride, padding=s.padding)
    pass_ = b.op.split(".", 1)[1]

    def runner(conv):
        if pass_ == "fwd":
            def fwd():
                with torch.no_grad():
                    return conv(x, w, bias, **kw)
            return fwd
        xs, ws = x.detach().clone(), w.detach().clone()
        bs = bias.detach().clone() if bias is not None else None
        wanted = {"dgrad": [xs], "wgrad": [ws] + ([bs] if bs is not None else []),
                  "fwd+bwd": [xs, ws] + ([bs] if bs is not None else [])}[pass_]
        for t in wanted:
            t.requires_grad_(True)
        if pass_ == "fwd+bwd":
            dy = _fixed_randn((s.batch, s.c_out, *s.out_hw), device, dt, b.layout)
            return lambda: torch.autograd.grad(conv(xs, ws, bs, **kw), wanted, dy)
        return _grad_runner(lambda *a: conv(*a, **kw), (xs, ws, bs), wanted, b.layout)

    return runner(conv_ours), runner(F.conv2d), relative_error


def _build_pool(b: Bench, device):
    s: TensorShape = b.shape
    dt = TORCH_DTYPES[b.dtype]
    x = _layout(torch.randn(s.batch, s.channels, s.h, s.w, device=device, dtype=dt), b.layout)
    pool_ours = ours(f"cnn.functional.{b.family}")
    pool_torch = getattr(F, b.family)
    kw = dict(kernel_size=s.kernel, stride=s.stride, padding=s.padding)

    def runner(pool):
        if b.op.endswith(".fwd"):
            def fwd():
                with torch.no_grad():
                    return pool(x, **kw)
            return fwd
        xs = x.detach().clone().requires_grad_(True)
        return _grad_runner(lambda t: pool(t, **kw), (xs,), [xs], b.layout)

    return runner(pool_ours), runner(pool_torch), relative_error


def _build_relu(b: Bench, device):
    s: TensorShape = b.shape
    x = _layout(torch.randn(s.batch, s.channels, s.h, s.w, device=device,
                            dtype=TORCH_DTYPES[b.dtype]), b.layout)
    relu_ours = ours("cnn.functional.relu")

    def runner(relu):
        def fwd():
            with torch.no_grad():
                return relu(x)
        return fwd

    return runner(relu_ours), runner(F.relu), relative_error


def _build_batch_norm(b: Bench, device):
    """Training-mode batch norm (batch statistics, running stats updated), affine."""
    s: TensorShape = b.shape
    dt = TORCH_DTYPES[b.dtype]
    x = _layout(torch.randn(s.batch, s.channels, s.h, s.w, device=device, dtype=dt), b.layout)
    bn_ours = ours("cnn.functional.batch_norm")
    gamma0 = torch.rand(s.channels, device=device, dtype=dt) + 0.5
    beta0 = torch.randn(s.channels, device=device, dtype=dt)

    def runner(bn):
        # Each side its own running statistics (both update them) and parameter copies.
        mean = torch.zeros(s.channels, device=device, dtype=dt)
        var = torch.ones(s.channels, device=device, dtype=dt)
        gamma, beta = gamma0.clone(), beta0.clone()
        call = lambda t, g, bb: bn(t, mean, var, g, bb, training=True, momentum=0.1, eps=1e-5)
        if b.op.endswith(".fwd"):
            def fwd():
                with torch.no_grad():
                    return call(x, gamma, beta)
            return fwd
        xs = x.detach().clone().requires_grad_(True)
        gamma.requires_grad_(True)
        beta.requires_grad_(True)
        return _grad_runner(call, (xs, gamma, beta), [xs, gamma, beta], b.layout)

    return runner(bn_ours), runner(F.batch_norm), relative_error


def _build_conv_bn_relu(b: Bench, device):
    """cnn.ConvBNReLU2d(conv, bn, relu) from torch modules against nn.Sequential(conv, bn, relu)."""
    s: ConvShape = b.shape
    dt = TORCH_DTYPES[b.dtype]
    fmt = torch.channels_last if b.layout == "channels_last" else torch.contiguous_format
    conv = nn.Conv2d(s.c_in, s.c_out, s.kernel, s.stride, s.padding, bias=s.bias)
    bn = nn.BatchNorm2d(s.c_out)
    with torch.no_grad():  # a non-trivial eval-mode fold
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    reference = nn.Sequential(conv, bn, nn.ReLU()).to(device=device, dtype=dt, memory_format=fmt)
    fused = ours("cnn.ConvBNReLU2d")(copy.deepcopy(conv), copy.deepcopy(bn), nn.ReLU())
    fused = fused.to(device=device, dtype=dt, memory_format=fmt)
    x = _layout(torch.randn(s.batch, s.c_in, s.h, s.w, device=device, dtype=dt), b.layout)
    mode = b.op.split(".")[1]  # train | eval

    def runner(module):
        module.train(mode == "train")
        if b.op.endswith("fwd+bwd"):
            xs = x.detach().clone().requires_grad_(True)
            params = [xs, *module.parameters()]
            dy = _fixed_randn((s.batch, s.c_out, *s.out_hw), device, dt, b.layout)
            return lambda: torch.autograd.grad(module(xs), params, dy)
        if mode == "eval":
            def fwd():
                with torch.no_grad():
                    return module(x)
            return fwd
        return lambda: module(x)

    compare = relative_error
    if b.op.endswith("fwd+bwd") and s.bias:
        # Grads: x, conv weight, conv bias, bn weight, bn bias. The conv bias gradient is 0 in
        # exact arithmetic (training-mode batch norm removes any per-channel shift), so both
        # sides return rounding noise: measure it against the bn bias gradient, the same kind
        # of per-channel sum over N*OH*OW.
        compare = lambda a, r: relative_error(a, r, [None, None, r[4], None, None])
    return runner(fused), runner(reference), compare


BUILDERS = {"conv2d": _build_conv, "max_pool2d": _build_pool, "avg_pool2d": _build_pool,
            "relu": _build_relu, "batch_norm": _build_batch_norm,
            "conv_bn_relu": _build_conv_bn_relu}

CONV_OPS = ("conv2d.fwd", "conv2d.dgrad", "conv2d.wgrad", "conv2d.fwd+bwd")
ACTIVATION_OPS = ("max_pool2d.fwd", "max_pool2d.bwd", "avg_pool2d.fwd", "avg_pool2d.bwd",
                  "relu.fwd", "batch_norm.fwd", "batch_norm.bwd")
FUSED_OPS = ("conv_bn_relu.train.fwd", "conv_bn_relu.train.fwd+bwd", "conv_bn_relu.eval.fwd")
ALL_OPS = CONV_OPS + ACTIVATION_OPS + FUSED_OPS


def select_ops(patterns) -> list:
    """Ops named by a pattern or under it: 'conv2d' -> the four conv2d passes,
    'conv_bn_relu.train' -> its two training entries, 'conv2d.fwd' -> that one."""
    if not patterns:
        return list(ALL_OPS)
    match = lambda op, p: op == p or op.startswith(p + ".")
    chosen = [op for op in ALL_OPS if any(match(op, p) for p in patterns)]
    unknown = [p for p in patterns if not any(match(op, p) for op in ALL_OPS)]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; choose from {', '.join(ALL_OPS)}")
    return chosen


def shapes_for(op: str, conv_shapes, activation_shapes):
    """Conv and fused ops run on conv shapes, the rest on activation shapes."""
    return conv_shapes if op.split(".")[0] in ("conv2d", "conv_bn_relu") else activation_shapes

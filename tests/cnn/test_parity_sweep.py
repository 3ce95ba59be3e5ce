"""Parity sweep: every public op of cnn.functional against torch's on the same arguments, over
a generated space of valid and invalid calls: types, ranks, sizes, options, dtypes, devices,
non-contiguous, stride-0 expanded, storage-offset, channels_last and permuted inputs, weights,
biases and statistics, requires_grad, empty tensors. Each call must give torch's result
(outputs, layout, mutated arguments, every gradient; float64 reference) or raise torch's
exception type without launching a kernel (tests/parity.py has the check).

CI replays a fixed set of examples (tests/conftest.py). Exploring:
    HYPOTHESIS_PROFILE=explore PARITY_EXAMPLES=2500 PARITY_RECORD=mismatches.jsonl \
        python -m pytest tests/test_parity_sweep.py -q
PARITY_RECORD appends each mismatch as a JSON line and keeps going instead of failing.
Known mismatches are listed in KNOWN: the sweep counts them instead of failing, and a fixed
case per entry below is a strict xfail, so it turns red once the behaviour matches torch's.
"""
import dataclasses
import json
import os
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import DEVICE, GPU
from support.parity import FLOATS, LAYOUTS, Mismatch, T, check, instantiate, routed

import cnn

EXAMPLES = int(os.environ.get("PARITY_EXAMPLES", "15"))
# CI replays fewer examples of the ops added later (each new op's replay costs suite time; the
# convolutions are the dear ones); PARITY_EXAMPLES sets every op's count.
CI_EXAMPLES = {"conv1d": 5, "conv_transpose1d": 5, "conv_transpose2d": 5,
               "routed_conv1d": 3, "routed_conv2d": 3, "routed_conv_transpose1d": 3,
               "routed_conv_transpose2d": 3, "routed_max_pool2d": 4, "routed_avg_pool2d": 4,
               "routed_adaptive_avg_pool2d": 4, "routed_adaptive_max_pool2d": 4,
               "routed_batch_norm": 4, "routed_relu": 4,
               **{op: 4 for op in ("relu6", "leaky_relu", "silu", "hardswish", "gelu")},
               **{f"routed_{op}": 2 for op in ("relu6", "leaky_relu", "silu", "hardswish",
                                               "gelu")},
               "conv_bn_act2d": 5}
RECORD = os.environ.get("PARITY_RECORD")
SWEEP = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD_DTYPES = (torch.int64, torch.int32, torch.bool, torch.complex64)


class _GradientFrom(torch.autograd.Function):
    """value (torch's forward result: its layout and values) with the gradient of graph
    (the same function computed another way)."""

    @staticmethod
    def forward(ctx, value, graph):
        return torch.empty_like(value).copy_(value)

    @staticmethod
    def backward(ctx, grad):
        return None, grad


def torch_batch_norm(input, running_mean, running_var, weight=None, bias=None,
                     training=False, momentum=0.1, eps=1e-5):
    """F.batch_norm: its forward as it is (output, layout, running stats, errors), with the
    gradient of a copy on contiguous tensors where any is not: torch 2.13's CPU backward
    gives wrong values there.
    - Its dense path (input and grad_output dense with the same suggested memory format)
      reads weight, running_mean and running_var as contiguous (a strided weight in
      evaluation: wrong gradients), and reads an input dense in another layout than NCHW
      (channels_last-contiguous although it suggests NCHW, e.g. permuted (1, 3, 1, 3)) as
      laid out like a contiguous grad_output.
    - Evaluation gives 1/sqrt(eps) for every element when the input is non-contiguous and
      running_var strided (test_eval_backward_with_strided_running_var).
    """
    out = F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
                       eps)
    tensors = (input, running_mean, running_var, weight, bias)
    if not out.requires_grad or all(t is None or t.is_contiguous() for t in tensors):
        return out
    contiguous = lambda t: t if t is None else t.contiguous()
    stats = (running_mean, running_var)
    if training:  # updated in place: the copy must not update them twice
        stats = tuple(t if t is None else t.detach().clone() for t in stats)
    graph = F.batch_norm(input.contiguous(), *map(contiguous, stats), contiguous(weight),
                         contiguous(bias), training, momentum, eps)
    return _GradientFrom.apply(out.detach(), graph)


def torch_conv_bn_relu2d(input, weight, bias=None, running_mean=None, running_var=None,
                         bn_weight=None, bn_bias=None, stride=1, padding=0, dilation=1,
                         groups=1, training=False, momentum=0.1, eps=1e-5):
    y = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return F.relu(torch_batch_norm(y, running_mean, running_var, bn_weight, bn_bias,
                                   training, momentum, eps))


TORCH_ACTIVATIONS = {
    "none": lambda t, slope: t,
    "relu": lambda t, slope: F.relu(t),
    "relu6": lambda t, slope: F.relu6(t),
    "leaky_relu": F.leaky_relu,
    "silu": lambda t, slope: F.silu(t),
    "hardswish": lambda t, slope: F.hardswish(t),
    "gelu": lambda t, slope: F.gelu(t),
}


def torch_conv_bn_act2d(input, weight, bias=None, running_mean=None, running_var=None,
                        bn_weight=None, bn_bias=None, stride=1, padding=0, dilation=1, groups=1,
                        training=False, momentum=0.1, eps=1e-5, num_batches_tracked=None,
                        activation="relu", negative_slope=0.01, residual=None):
    """act(batch_norm(conv2d(...)) + residual) in torch's ops; an unknown activation name is
    a ValueError (the fused op's contract: torch has no such op)."""
    if activation not in TORCH_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    y = torch_batch_norm(F.conv2d(input, weight, bias, stride, padding, dilation, groups),
                         running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return TORCH_ACTIVATIONS[activation](y if residual is None else y + residual,
                                         negative_slope)


OPS = {
    "conv2d": (cnn.functional.conv2d, F.conv2d),
    "max_pool2d": (cnn.functional.max_pool2d, F.max_pool2d),
    "avg_pool2d": (cnn.functional.avg_pool2d, F.avg_pool2d),
    "adaptive_avg_pool2d": (cnn.functional.adaptive_avg_pool2d, F.adaptive_avg_pool2d),
    "adaptive_max_pool2d": (cnn.functional.adaptive_max_pool2d, F.adaptive_max_pool2d),
    "batch_norm": (cnn.functional.batch_norm, torch_batch_norm),
    "relu": (cnn.functional.relu, F.relu),
    "conv_bn_relu2d": (cnn.functional.conv_bn_relu2d, torch_conv_bn_relu2d),
    "conv1d": (cnn.functional.conv1d, F.conv1d),
    "conv_transpose1d": (cnn.functional.conv_transpose1d, F.conv_transpose1d),
    "conv_transpose2d": (cnn.functional.conv_transpose2d, F.conv_transpose2d),
}

# Ops being written elsewhere: swept once cnn.functional (and cnn.routing) has them, skipped
# with the reason until then (op -> reason).
PENDING = {}
ACTIVATIONS = ("relu6", "leaky_relu", "silu", "hardswish", "gelu")
for _name in ACTIVATIONS:
    if hasattr(cnn.functional, _name):
        OPS[_name] = (getattr(cnn.functional, _name), getattr(F, _name))
    else:
        PENDING[_name] = f"cnn.functional.{_name} does not exist yet"
if hasattr(cnn.functional, "conv_bn_act2d"):
    OPS["conv_bn_act2d"] = (cnn.functional.conv_bn_act2d, torch_conv_bn_act2d)
else:
    PENDING["conv_bn_act2d"] = "cnn.functional.conv_bn_act2d does not exist yet"
DIRECT = tuple(OPS)

# torch's own functions called inside cnn.enabled() (cnn/routing.py), against the same call
# outside it: torch's result or torch's error whichever of ours or torch's op runs, and the
# call counted (routed calls launched our kernels, fallbacks name their reason).
for _name, _theirs in (("conv1d", F.conv1d), ("conv2d", F.conv2d),
                       ("conv_transpose1d", F.conv_transpose1d),
                       ("conv_transpose2d", F.conv_transpose2d),
                       ("max_pool2d", F.max_pool2d), ("avg_pool2d", F.avg_pool2d),
                       ("adaptive_avg_pool2d", F.adaptive_avg_pool2d),
                       ("adaptive_max_pool2d", F.adaptive_max_pool2d),
                       ("batch_norm", F.batch_norm), ("relu", F.relu)):
    # batch norm: torch's result in the reference is torch_batch_norm's (see there)
    OPS[f"routed_{_name}"] = (routed(_theirs, _name),
                              torch_batch_norm if _name == "batch_norm" else _theirs)
_ROUTED_NAMES = {name for name, _ in cnn.routing.ROUTES.values()}
for _name in ACTIVATIONS:
    if _name in _ROUTED_NAMES and _name in OPS:
        OPS[f"routed_{_name}"] = (routed(getattr(F, _name), _name), getattr(F, _name))
    else:
        PENDING[f"routed_{_name}"] = f"cnn.routing does not route torch's {_name} yet"


# ---------------------------------------------------------------------------------------------
# Known mismatches: (ops, predicate on the built arguments and the mismatch message, reason).
# A mismatch that a predicate matches is counted, not failed, so the sweep stays green and
# finds new ones; test_known_mismatch keeps each visible as a strict xfail (or a test).

def _mixes_meta(args, kwargs, message):
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    return len({t.device.type for t in tensors}) > 1 and \
        any(t.device.type == "meta" for t in tensors)


def _float_only(args, kwargs, message):
    x = args[0]
    return isinstance(x, torch.Tensor) and not x.is_floating_point() and \
        "ours raises NotImplementedError" in message


def _fused_contract(args, kwargs, message):
    return any(m in message for m in ("must be a 1-D tensor with unit stride",
                                      "bn_weight and bn_bias must both be given",
                                      "expected 4D input"))


def _empty_conv_dtypes(args, kwargs, message):
    x = args[0]
    return isinstance(x, torch.Tensor) and x.numel() == 0 and \
        message.startswith("torch returns; ours raises") and "should be the same" in message


def _global_mean_any_rank(args, kwargs, message):
    x, size = args[0], kwargs["output_size"]
    if not isinstance(x, torch.Tensor):
        return False
    if isinstance(size, (list, tuple)):  # None entries take the input's trailing sizes
        size = tuple(s if s is not None else d
                     for s, d in zip(size, x.shape[-len(size):], strict=False))
    else:
        size = (size, size)
    return size == (1, 1) and message.startswith("torch returns")


KNOWN = [
    (DIRECT, _mixes_meta,
     "by design: a meta tensor among others; torch's meta dispatch returns a meta result (or "
     "reorders its checks), ours refuses the device mix (RuntimeError)"),
    (DIRECT, _float_only,
     "by design: integer, bool and complex tensors that torch's CPU ops accept (max_pool2d "
     "on integers, avg_pool2d on int64, conv2d on integers and complex): the kernels are "
     "float-only and raise NotImplementedError"),
    (("conv_bn_relu2d", "conv_bn_act2d"), _fused_contract,
     "cnn/functional/conv_bn_act.py: the fused op takes 4D input, unit-stride 1-D batch-norm "
     "tensors and an affine pair or none, and raises ValueError otherwise; relu(batch_norm("
     "conv2d(...))) in torch takes any"),
    (("conv2d", "conv_bn_relu2d", "conv1d", "conv_transpose1d", "conv_transpose2d",
      "conv_bn_act2d"),
     _empty_conv_dtypes,
     "torch's convolution of an empty input skips its input/weight dtype check (its result "
     "then takes odd dtypes); ours checks"),
    (("adaptive_avg_pool2d",), _global_mean_any_rank,
     "torch computes output_size (1, 1) as a mean over the last two dims without its checks "
     "(any rank, empty dims give NaN); ours takes 3D/4D input with non-empty C, H, W"),
]


def _overlapping_stats(args, kwargs, message):
    return "more than one element of the written-to tensor" in message and \
        message.startswith("torch returns")


KNOWN.append((
    ("batch_norm", "conv_bn_relu2d", "conv_bn_act2d"), _overlapping_stats,
    "by design: training with a stride-0 (expanded) running stat; torch's CPU kernel writes "
    "every channel's statistic into the one shared element, ours refuses before any launch"))




def _string_padding_bias_dtype(args, kwargs, message):
    x, bias = args[0], kwargs.get("bias", args[2] if len(args) > 2 else None)
    return isinstance(kwargs.get("padding"), str) and isinstance(bias, torch.Tensor) and \
        isinstance(x, torch.Tensor) and bias.dtype != x.dtype and \
        "ours raises RuntimeError(Input type" in message and "bias type" in message


KNOWN.append((
    ("conv2d", "conv_bn_relu2d", "conv1d", "conv_bn_act2d"), _string_padding_bias_dtype,
    "torch's conv2d with string padding ('valid', 'same') skips conv2d's own bias dtype check "
    "(the int-padding overload has it); its slow CPU backends then cast the bias to the "
    "input's dtype, its mkldnn backend (picked by dtype, batch, groups, kernel, strides and "
    "thread count) refuses it. Ours refuses it always, as for int padding"))


def _cancellation_noise(args, kwargs, message):
    """A training gradient that torch's own result in that dtype misses the float64
    reference by too, ours by no more than twice as far."""
    ours = re.search(r"Greatest absolute difference: (\S+) at", message)
    theirs = re.search(r"torch's own \S+ misses by (\S+)\)", message)
    return kwargs.get("training") is True and message.startswith("gradient of leaf") and \
        ours is not None and theirs is not None and \
        float(ours[1]) <= 2 * float(theirs[1])


KNOWN.append((
    ("conv_bn_relu2d", "conv_bn_act2d"), _cancellation_noise,
    "ill-conditioned training gradients of the fused op (the conv bias gradient, exactly 0 "
    "through training batch norm, so both results are the rounding noise of a cancelling "
    "sum; float16 input gradients of a few values per channel): ours reduces in another "
    "order (per-tile partials) and misses the float64 reference by up to twice as far as "
    "torch's own result in that dtype, which misses it too"))


def _output_size_zero(args, kwargs, message):
    sizes = re.search(r"Calculated output size per channel: \(([-\d x]+)\)\. Output size is too "
                      r"small", message)
    return message.startswith("torch returns; ours raises RuntimeError") and \
        sizes is not None and 0 in [int(v) for v in sizes[1].split(" x ")]


KNOWN.append((
    ("conv_transpose1d", "conv_transpose2d"), _output_size_zero,
    "torch's transposed convolution with an output size of 0 in some dimension: its mkldnn "
    "CPU backend (picked by dtype, float32 or bfloat16, and batch size, e.g. 2 but not 1) "
    "returns an empty result, its other backends raise RuntimeError ('Output size is too "
    "small'); ours raises always"))


def _transposed_bias_dtype(args, kwargs, message):
    return message.startswith("torch returns; ours raises RuntimeError(Input type") and \
        "bias type" in message


KNOWN.append((
    ("conv_transpose1d", "conv_transpose2d"), _transposed_bias_dtype,
    "torch's transposed convolution checks the bias dtype on its mkldnn CPU backend only "
    "(picked by dtype, batch size 2 or more, dilation 1, ...); its slow backend casts a bias "
    "of another dtype to the input's. Ours refuses it always, as conv2d does"))


def _meta_weight_garbage(args, kwargs, message):
    """Values that differ (or NaN among them that the comparison itself trips on), not
    an error that only one side raises."""
    return _mixes_meta(args, kwargs, message) and \
        not message.startswith(("torch raises", "torch returns;"))


KNOWN.append((
    ("routed_conv1d", "routed_conv2d", "routed_conv_transpose1d", "routed_conv_transpose2d"),
    _meta_weight_garbage,
    "torch's CPU convolution of a CPU input with a meta weight or bias returns a CPU tensor of "
    "uninitialised memory: routing runs torch's op there (a meta tensor is not on our "
    "device), and two calls of torch's op disagree"))


def _residual_contract(args, kwargs, message):
    return message.startswith("torch returns; ours raises RuntimeError") and \
        "the residual's" in message


KNOWN.append((
    ("conv_bn_act2d",), _residual_contract,
    "cnn/functional/conv_bn_act.py: the fused op's residual has the output's shape and dtype "
    "(RuntimeError otherwise); torch's act(batch_norm(conv2d(...)) + residual) broadcasts and "
    "promotes it"))


def known_for(predicate) -> str:
    """The reason of KNOWN's entry with this predicate."""
    (reason,) = [r for _, p, r in KNOWN if p is predicate]
    return reason


def known_reason(op, args, kwargs, message):
    built_args, built_kwargs, _ = instantiate(args, kwargs, double=False)
    for ops, predicate, reason in KNOWN:
        if op in ops and predicate(built_args, built_kwargs, message):
            return reason
    return None


def torch_indices_escape(args, kwargs) -> bool:
    """Whether torch's max_pool2d picks an index outside the input plane: a dilated window
    that lies wholly in the padding gives -inf and the index of a padded position (ours
    returns the same), and torch's backward then writes its gradient there, out of bounds,
    corrupting the heap (the process aborts later). Such calls are compared without
    gradients; test_all_padding_window_backward checks ours."""
    built, built_kwargs, _ = instantiate(args, kwargs, double=False)
    x = built[0]
    try:
        with torch.no_grad():
            y, indices = F.max_pool2d(x, **{**built_kwargs, "return_indices": True})
    except Exception:  # an error case: no backward runs
        return False
    if not indices.numel():
        return False
    escaped = (indices < 0) | (indices >= x.shape[-2] * x.shape[-1])
    # A window wholly in the padding gives -inf; its index may still fall inside the plane
    # (a padded column -1 of row h is element h*W - 1), where torch's gradient then lands.
    padded = torch.isneginf(y) & ~torch.isneginf(x).any()
    return bool((escaped | padded).any())


def run_case(op, args, kwargs):
    ours, theirs = OPS[op]
    if op.endswith("max_pool2d") and not op.endswith("adaptive_max_pool2d") and \
            isinstance(args[0], T) and args[0].requires_grad and \
            torch_indices_escape(args, kwargs):
        args = (dataclasses.replace(args[0], requires_grad=False),)
    if RECORD:  # the case under way, should the process die in it
        with open(RECORD + ".last", "w") as f:
            f.write(f"{op} {args!r} {kwargs!r}\n")
    try:
        outcome = check(ours, theirs, args, kwargs)
    except Exception as mismatch:  # a Mismatch, or the harness itself failing on this case
        if not isinstance(mismatch, Mismatch) and not RECORD:
            raise
        reason = known_reason(op, args, kwargs, str(mismatch))
        if reason is None and not RECORD:
            raise
        if RECORD:
            with open(RECORD, "a") as f:
                f.write(json.dumps({"op": op, "args": repr(args), "kwargs": repr(kwargs),
                                    "known": reason, "type": type(mismatch).__name__,
                                    "mismatch": str(mismatch)}) + "\n")
        outcome = "known" if reason else "mismatch"
    if RECORD:
        with open(RECORD + ".count", "a") as f:
            f.write(f"{op} {outcome}\n")
        if getattr(ours, "last", None):  # a routed op: which way the call went
            with open(RECORD + ".routes", "a") as f:
                f.write(f"{op} {ours.last}\n")
    return outcome


# ---------------------------------------------------------------------------------------------
# Generators: tiny shapes (the interpreter's cost is per program and per element).

def tensor(draw, shape, dtype, grad=True, layouts=LAYOUTS, positive=False, device=None):
    return T(tuple(shape), dtype, draw(st.sampled_from(layouts)),
             grad and dtype.is_floating_point and draw(st.booleans()), device,
             draw(st.integers(0, 2**16)), positive)


def input_dtype(draw):
    return draw(st.sampled_from((torch.float32,) * 4 + FLOATS + ODD_DTYPES[:1] +
                                (ODD_DTYPES if draw(st.integers(0, 9)) == 0 else ())))


def other_dtype(draw, dtype):
    """Mostly the input's dtype; sometimes another (torch refuses or, for batch norm's
    parameters under half input, accepts float32)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(FLOATS + (torch.int64,)))
    return dtype


def device(draw):
    """Now and then another device than the test's (meta where there is no second one)."""
    return ("cpu" if GPU else "meta") if draw(st.integers(0, 29)) == 0 else None


def rare_device(draw):
    """device()'s, but its simplest draw is the test device (CI replays the simplest
    examples first: they should compute values)."""
    return ("cpu" if GPU else "meta") if draw(st.integers(0, 29)) == 29 else None


def maybe_pair(draw, values):
    return draw(st.one_of(values, st.tuples(values, values), st.lists(values, min_size=1,
                                                                      max_size=1)))


def bad(draw, *mutations):
    """One mutation out of the list a quarter of the time, else None."""
    return draw(st.sampled_from((None,) * (3 * len(mutations)) + mutations))


def bad_ones(draw, *mutations):
    """A set of mutations: as bad()'s one, and now and then two at once (torch checks its
    arguments in an order: which error comes first)."""
    picked = {bad(draw, *mutations)}
    if draw(st.integers(0, 5)) == 0:
        picked.add(draw(st.sampled_from(mutations)))
    return picked


@st.composite
def conv_args(draw, fused=False):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = draw(st.integers(1, 2)) * groups, draw(st.integers(1, 2)) * groups
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = maybe_pair(draw, st.integers(1, 2))
    dilation = maybe_pair(draw, st.integers(1, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["same", "valid"])))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n = draw(st.sampled_from([1, 2, 2, 0] + ([] if fused else [None])))
    dtype = input_dtype(draw)
    x_shape = (cin, h, w) if n is None else (n, cin, h, w)
    w_shape = (cout, cin // groups, kh, kw)
    has_bias = draw(st.booleans())
    b_shape = (cout,)
    mutation = bad(draw, "stride0", "stride_neg", "dilation0", "pad_neg", "pad_str", "groups0",
                   "groups_bad", "weight3d", "input2d", "input5d", "bias_size", "bias2d",
                   "stride_float", "stride3", "input_list", "groups_float")
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if mutation == "stride0":
        options["stride"] = 0
    elif mutation == "stride_neg":
        options["stride"] = (1, -1)
    elif mutation == "dilation0":
        options["dilation"] = 0
    elif mutation == "pad_neg":
        options["padding"] = -1
    elif mutation == "pad_str":
        options["padding"] = "full"
    elif mutation == "groups0":
        options["groups"] = 0
    elif mutation == "groups_bad":
        options["groups"] = groups + 1
    elif mutation == "weight3d":
        w_shape = w_shape[:3]
    elif mutation == "input2d":
        x_shape = (h, w)
    elif mutation == "input5d":
        x_shape = (1, *x_shape)
    elif mutation == "bias_size":
        has_bias, b_shape = True, (cout + 1,)
    elif mutation == "bias2d":
        has_bias, b_shape = True, (1, cout)
    elif mutation == "stride_float":
        options["stride"] = 1.5
    elif mutation == "stride3":
        options["stride"] = (1, 1, 1)
    elif mutation == "groups_float":
        options["groups"] = float(groups)
    x = tensor(draw, x_shape, dtype)
    if mutation == "input_list":
        x = [[1.0, 2.0]]
    weight = tensor(draw, w_shape, other_dtype(draw, dtype), device=device(draw))
    bias = tensor(draw, b_shape, other_dtype(draw, dtype), device=device(draw)) \
        if has_bias else None
    return (x, weight, bias), options, cout


@st.composite
def conv2d_calls(draw):
    args, options, _ = draw(conv_args())
    if draw(st.booleans()):
        return args, options
    return args[:2], {"bias": args[2], **options}


@st.composite
def window_pool_calls(draw, op):
    dtype = input_dtype(draw)
    kernel = maybe_pair(draw, st.integers(1, 3))
    k = kernel if isinstance(kernel, int) else min(kernel)
    stride = draw(st.one_of(st.none(), st.just([]), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.integers(0, k // 2))
    n = draw(st.sampled_from([1, 2, 0, None]))
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    options = {"kernel_size": kernel, "stride": stride, "padding": padding,
               "ceil_mode": draw(st.booleans())}
    if op == "max_pool2d":
        options["dilation"] = maybe_pair(draw, st.integers(1, 2))
        options["return_indices"] = draw(st.booleans())
    else:
        options["count_include_pad"] = draw(st.booleans())
        options["divisor_override"] = draw(st.sampled_from([None, None, 1, 2, 3]))
    shape = (c, h, w) if n is None else (n, c, h, w)
    mutations = bad_ones(draw, "kernel0", "stride0", "pad_neg", "pad_big", "input2d", "input5d",
                         "channels0", "kernel3", "kernel_float", "input_list", "divisor0",
                         "dilation0", "height0", "stride_float", "pad3", "ceil_int",
                         "divisor_float", "count_pad_none")
    if "kernel0" in mutations:
        options["kernel_size"] = 0
    if "stride0" in mutations:
        options["stride"] = 0
    if "pad_neg" in mutations:
        options["padding"] = -1
    if "pad_big" in mutations:
        options["padding"] = k // 2 + 1
    if "input2d" in mutations:
        shape = (h, w)
    if "input5d" in mutations:
        shape = (1, *shape)
    if "channels0" in mutations:
        shape = (*shape[:-3], 0, h, w)
    if "height0" in mutations:
        shape = (*shape[:-2], 0, w)
    if "kernel3" in mutations:
        options["kernel_size"] = (1, 2, 3)
    if "kernel_float" in mutations:
        options["kernel_size"] = 2.0
    if "divisor0" in mutations and op == "avg_pool2d":
        options["divisor_override"] = 0
    if "dilation0" in mutations and op == "max_pool2d":
        options["dilation"] = 0
    if "stride_float" in mutations:
        options["stride"] = 1.5
    if "pad3" in mutations:
        options["padding"] = (0, 0, 0)
    if "ceil_int" in mutations:
        options["ceil_mode"] = int(options["ceil_mode"])
    if "divisor_float" in mutations and op == "avg_pool2d":
        options["divisor_override"] = 2.0
    if "count_pad_none" in mutations and op == "avg_pool2d":
        options["count_include_pad"] = None
    x = [[1.0]] if "input_list" in mutations else tensor(draw, shape, dtype)
    return (x,), options


@st.composite
def adaptive_pool_calls(draw, op):
    dtype = input_dtype(draw)
    n = draw(st.sampled_from([1, 2, 0, None]))
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    size = st.integers(1, 4)
    output_size = draw(st.one_of(size, st.tuples(size, size), st.tuples(st.none(), size),
                                 st.tuples(size, st.none()), st.lists(size, min_size=2,
                                                                      max_size=2)))
    shape = (c, h, w) if n is None else (n, c, h, w)
    mutations = bad_ones(draw, "size0", "size_neg", "size3", "size_float", "input2d",
                         "input5d", "channels0", "width0", "input_list", "size_float_pair")
    if "size0" in mutations:
        output_size = 0
    if "size_neg" in mutations:
        output_size = (-1, 2)
    if "size3" in mutations:
        output_size = (1, 2, 3)
    if "size_float" in mutations:
        output_size = 1.5
    if "input2d" in mutations:
        shape = (h, w)
    if "input5d" in mutations:
        shape = (1, *shape)
    if "channels0" in mutations:
        shape = (*shape[:-3], 0, h, w)
    if "width0" in mutations:
        shape = (*shape[:-1], 0)
    if "size_float_pair" in mutations:
        output_size = (2, 1.0)
    x = [[1.0]] if "input_list" in mutations else tensor(draw, shape, dtype)
    kwargs = {"output_size": output_size}
    if op == "adaptive_max_pool2d":
        kwargs["return_indices"] = draw(st.booleans())
    return (x,), kwargs


def bn_params(draw, c, dtype, training):
    """running_mean, running_var, weight, bias and the options, some of them invalid."""
    stats_layouts = ("contiguous", "strided", "offset")  # updated in place: no expanded ones
    has_stats = draw(st.booleans()) or not training
    mutation = bad(draw, "only_mean", "only_var", "mean_size", "weight_size", "bias_size",
                   "eps0", "eps_neg", "stats_expanded")
    p_dtype = other_dtype(draw, dtype)
    if dtype in (torch.float16, torch.bfloat16) and draw(st.integers(0, 3)) == 0:
        p_dtype = torch.float32  # torch's mixed precision: half input, float32 parameters
    size = lambda name: c + 1 if mutation == name else c
    rm = tensor(draw, (size("mean_size"),), p_dtype, grad=False, layouts=stats_layouts) \
        if has_stats and mutation != "only_var" else None
    rv = tensor(draw, (c,), p_dtype, grad=False, positive=True,
                layouts=("expanded",) if mutation == "stats_expanded" else stats_layouts) \
        if has_stats and mutation != "only_mean" else None
    weight = tensor(draw, (size("weight_size"),), p_dtype, device=device(draw)) \
        if draw(st.booleans()) else None
    bias = tensor(draw, (size("bias_size"),), p_dtype) if draw(st.booleans()) else None
    eps = {"eps0": 0.0, "eps_neg": -1.0}.get(mutation, draw(st.sampled_from([1e-5, 1e-3])))
    momentum = draw(st.sampled_from([0.1, 0.0, 1.0, 0.5]))
    return rm, rv, weight, bias, {"training": training, "momentum": momentum, "eps": eps}


@st.composite
def batch_norm_calls(draw):
    dtype = input_dtype(draw)
    rank = draw(st.sampled_from([2, 3, 4, 4, 4, 5]))
    c = draw(st.integers(1, 3))
    shape = (draw(st.sampled_from([1, 2, 3, 0])), c,
             *(draw(st.integers(1, 3)) for _ in range(rank - 2)))
    if draw(st.integers(0, 19)) == 0:
        shape = shape[:1]  # a 1-D input
    training = draw(st.booleans())
    rm, rv, weight, bias, options = bn_params(draw, c, dtype, training)
    x = tensor(draw, shape, dtype)
    return (x, rm, rv, weight, bias), options


@st.composite
def relu_calls(draw):
    dtype = draw(st.sampled_from((torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                  torch.int64, torch.int32, torch.uint8, torch.bool,
                                  torch.complex64)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    inplace = draw(st.booleans())
    x = [1.0, -2.0] if draw(st.integers(0, 29)) == 0 else tensor(draw, shape, dtype)
    return (x,), {"inplace": inplace}


@st.composite
def conv_bn_relu2d_calls(draw):
    (x, weight, bias), options, cout = draw(conv_args(fused=True))
    dtype = x.dtype if isinstance(x, T) else torch.float32
    training = draw(st.booleans())
    rm, rv, bn_weight, bn_bias, bn_options = bn_params(draw, cout, dtype, training)
    return (x, weight, bias), {"running_mean": rm, "running_var": rv, "bn_weight": bn_weight,
                               "bn_bias": bn_bias, **options, **bn_options}


@st.composite
def conv_nd_calls(draw, dims, transposed):
    """conv1d (dims 1), conv_transpose1d and conv_transpose2d calls in torch's signatures: tiny
    shapes, unbatched input, groups, stride, dilation, padding ('same'/'valid' for conv1d),
    output_padding (transposed), and a quarter of them with one invalid argument."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = draw(st.integers(1, 2)) * groups, draw(st.integers(1, 2)) * groups
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    per_dim = lambda values: draw(st.one_of(values, st.tuples(*[values] * dims),
                                            st.lists(values, min_size=1, max_size=1)))
    stride, dilation = per_dim(st.integers(1, 2)), per_dim(st.integers(1, 2))
    spread = lambda v: tuple(v) * (dims // len(v)) if isinstance(v, (list, tuple)) \
        else (v,) * dims
    options = {"stride": stride}
    if transposed:
        options["padding"] = per_dim(st.integers(0, 1))  # 2 leaves tiny outputs empty
        # valid: output_padding < stride or < dilation, per dimension
        limits = [max(s, d) - 1 for s, d in zip(spread(stride), spread(dilation), strict=True)]
        output_padding = tuple(draw(st.integers(0, m)) for m in limits)
        options["output_padding"] = draw(st.sampled_from(
            [output_padding, list(output_padding), output_padding[0]]
            if len(set(output_padding)) == 1 else [output_padding]))
        options["groups"], options["dilation"] = groups, dilation  # torch's order
    else:
        options["padding"] = draw(st.sampled_from(["same", "valid"])) \
            if draw(st.integers(0, 2)) == 0 else per_dim(st.integers(0, 2))
        options["dilation"], options["groups"] = dilation, groups
    sizes = tuple(draw(st.integers(1, 4 if dims == 2 else 7)) for _ in range(dims))
    n = draw(st.sampled_from([1, 2, 2, 0, None]))
    dtype = input_dtype(draw)
    x_shape = (cin, *sizes) if n is None else (n, cin, *sizes)
    w_shape = (cin, cout // groups, *kernel) if transposed else (cout, cin // groups, *kernel)
    has_bias, b_shape = draw(st.booleans()), (cout,)
    mutation = bad(draw, "stride0", "stride_neg", "dilation0", "dilation_neg", "pad_neg",
                   "pad_str", "groups0", "groups_bad", "weight_rank_low", "weight_rank_high",
                   "input_rank_low", "input_rank_high", "bias_size", "bias2d", "stride_float",
                   "stride_long", "input_list", "weight_list", "groups_float", "channels_bad",
                   "size0", *(("out_pad_big", "out_pad_neg", "out_pad_float", "pad_same")
                              if transposed else ("same_strided", "pad_float")))
    if mutation == "stride0":
        options["stride"] = 0
    elif mutation == "stride_neg":
        options["stride"] = (-1,) * dims
    elif mutation == "dilation0":
        options["dilation"] = 0
    elif mutation == "dilation_neg":
        options["dilation"] = -1
    elif mutation == "pad_neg":
        options["padding"] = (*(0,) * (dims - 1), -1)
    elif mutation == "pad_str":
        options["padding"] = "full"
    elif mutation == "pad_same":
        options["padding"] = "same"
    elif mutation == "pad_float":
        options["padding"] = 1.0
    elif mutation == "same_strided":
        options["padding"], options["stride"] = "same", 2
    elif mutation == "groups0":
        options["groups"] = 0
    elif mutation == "groups_bad":
        options["groups"] = groups + 1
    elif mutation == "groups_float":
        options["groups"] = float(groups)
    elif mutation == "weight_rank_low":
        w_shape = w_shape[:-1]
    elif mutation == "weight_rank_high":
        w_shape = (*w_shape, 1)
    elif mutation == "input_rank_low":
        x_shape = sizes
    elif mutation == "input_rank_high":
        x_shape = (1, *x_shape)
    elif mutation == "bias_size":
        has_bias, b_shape = True, (cout + 1,)
    elif mutation == "bias2d":
        has_bias, b_shape = True, (1, cout)
    elif mutation == "stride_float":
        options["stride"] = 1.5
    elif mutation == "stride_long":
        options["stride"] = (1,) * (dims + 1)
    elif mutation == "channels_bad":
        x_shape = (*x_shape[:-dims - 1], cin + 1, *sizes)
    elif mutation == "size0":
        x_shape = (*x_shape[:-1], 0)
    elif mutation == "out_pad_big":
        options["output_padding"] = max(max(spread(stride)), max(spread(dilation)))
    elif mutation == "out_pad_neg":
        options["output_padding"] = -1
    elif mutation == "out_pad_float":
        options["output_padding"] = 0.5
    x = [[1.0, 2.0]] if mutation == "input_list" else tensor(draw, x_shape, dtype)
    weight = [[1.0]] if mutation == "weight_list" else \
        tensor(draw, w_shape, other_dtype(draw, dtype), device=rare_device(draw))
    bias = tensor(draw, b_shape, other_dtype(draw, dtype), device=rare_device(draw)) \
        if has_bias else None
    if draw(st.booleans()):
        return (x, weight, bias), options
    return (x, weight), {"bias": bias, **options}


@st.composite
def activation_calls(draw, op):
    """relu6, leaky_relu, silu, hardswish, gelu: tiny shapes (0-D and empty too), values
    spread past the kinks (relu6's 6, hardswish's +-3), inplace, the slope and approximate
    arguments, valid and invalid."""
    dtype = draw(st.sampled_from(FLOATS * 2 + (torch.int64, torch.int32, torch.bool,
                                               torch.complex64)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    x = [1.0, -2.0] if draw(st.integers(0, 29)) == 29 else \
        dataclasses.replace(tensor(draw, shape, dtype), scale=draw(st.sampled_from([1, 4])))
    if op == "gelu":
        return (x,), {"approximate": draw(st.sampled_from(
            ["none", "tanh", "none", "tanh", "exact", None]))}
    kwargs = {"inplace": draw(st.booleans())}
    if op == "leaky_relu":
        kwargs["negative_slope"] = draw(st.sampled_from([0.01, 0.2, 0.0, -0.5, 1.5, 2, "0.1"]))
    return (x,), kwargs


def conv2d_output_shape(x, weight, options):
    """conv2d's output shape for these arguments, from torch's meta computation; None where
    torch refuses them."""
    if not (isinstance(x, T) and isinstance(weight, T)):
        return None
    try:
        return tuple(F.conv2d(torch.empty(x.shape, device="meta"),
                              torch.empty(weight.shape, device="meta"), **options).shape)
    except Exception:  # an invalid call: no residual to size
        return None


@st.composite
def conv_bn_act2d_calls(draw):
    """conv_bn_relu2d's calls with an activation (its slope), and a residual: of the output's
    shape mostly, now and then one that broadcasts or has another dtype."""
    args, kwargs = draw(conv_bn_relu2d_calls())
    x, weight = args[:2]
    kwargs["activation"] = draw(st.sampled_from(
        ["relu", "relu6", "leaky_relu", "silu", "hardswish", "gelu", "none", "tanh"]))
    if kwargs["activation"] == "leaky_relu":
        kwargs["negative_slope"] = draw(st.sampled_from([0.01, 0.2, -0.5]))
    options = {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups")}
    shape = conv2d_output_shape(x, weight, options)
    if shape is not None and draw(st.booleans()):
        dtype = x.dtype
        mutation = bad(draw, "broadcast", "dtype")
        if mutation == "broadcast":
            shape = (1, shape[1], 1, 1)
        elif mutation == "dtype":
            dtype = torch.float64 if dtype != torch.float64 else torch.float32
        kwargs["residual"] = tensor(draw, shape, dtype)
    return args, kwargs


CALLS = {
    "conv2d": conv2d_calls(),
    "max_pool2d": window_pool_calls("max_pool2d"),
    "avg_pool2d": window_pool_calls("avg_pool2d"),
    "adaptive_avg_pool2d": adaptive_pool_calls("adaptive_avg_pool2d"),
    "adaptive_max_pool2d": adaptive_pool_calls("adaptive_max_pool2d"),
    "batch_norm": batch_norm_calls(),
    "relu": relu_calls(),
    "conv_bn_relu2d": conv_bn_relu2d_calls(),
    "conv1d": conv_nd_calls(1, transposed=False),
    "conv_transpose1d": conv_nd_calls(1, transposed=True),
    "conv_transpose2d": conv_nd_calls(2, transposed=True),
}
CALLS.update({f"routed_{op}": CALLS[op] for op in (
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "batch_norm", "relu")})
CALLS.update({op: activation_calls(op) for op in ACTIVATIONS if op in OPS})
CALLS.update({f"routed_{op}": activation_calls(op) for op in ACTIVATIONS
              if f"routed_{op}" in OPS})
if "conv_bn_act2d" in OPS:
    CALLS["conv_bn_act2d"] = conv_bn_act2d_calls()


@pytest.mark.parametrize("op", [*CALLS, *(pytest.param(op, marks=pytest.mark.skip(reason=why))
                                           for op, why in PENDING.items())])
def test_parity_sweep(op):
    @settings(SWEEP, max_examples=EXAMPLES if "PARITY_EXAMPLES" in os.environ
              else CI_EXAMPLES.get(op, EXAMPLES))
    @given(call=CALLS[op])
    def sweep(call):
        args, kwargs = call
        run_case(op, args, kwargs)
    sweep()


def test_all_padding_window_backward():
    """A dilated window wholly in the padding: output -inf and a padded position's index, as
    torch's; ours drops its gradient (no input element is in the window), where torch's
    backward writes out of bounds."""
    x = torch.randn(1, 2, 1, 3, device=DEVICE, requires_grad=True)
    y, indices = cnn.functional.max_pool2d(x, 2, padding=1, dilation=2, return_indices=True)
    want_y, want_indices = F.max_pool2d(x.detach(), 2, padding=1, dilation=2,
                                        return_indices=True)
    assert torch.equal(y, want_y) and torch.equal(indices, want_indices)
    assert torch.isinf(y).all()
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x))


F64 = torch.float64
_X = T((2, 3, 5, 5), F64, requires_grad=True, seed=1)
_W = T((4, 3, 3, 3), F64, requires_grad=True, seed=2)
_RM3, _RV3 = T((3,), F64, seed=3), T((3,), F64, positive=True, seed=4)
_BN = dict(running_mean=T((4,), F64, seed=3), running_var=T((4,), F64, positive=True, seed=4),
           bn_weight=T((4,), F64, seed=5), bn_bias=T((4,), F64, seed=6), training=True)

# Cases the sweep found wrong while the kernels were being fixed (a strided or expanded
# bias read as contiguous, a channels_last weight with NCHW input giving NCHW output); now
# torch's, kept as fixed cases.
FIXED_CASES = {
    "conv2d_strided_bias": ("conv2d", (_X, _W, T((4,), F64, "strided", True, seed=7)), {}),
    "conv2d_expanded_bias": ("conv2d", (_X, _W, T((4,), F64, "expanded", True, seed=7)), {}),
    "conv_bn_relu2d_strided_bias": ("conv_bn_relu2d",
                                    (_X, _W, T((4,), F64, "strided", True, seed=7)), _BN),
    "conv2d_channels_last_weight": ("conv2d", (_X, T((4, 3, 3, 3), F64, "channels_last",
                                                     True, seed=2)), {}),
    "conv2d_depthwise_strided_bias": (
        "conv2d", (T((1, 2, 3, 3), F64, seed=1), T((2, 1, 2, 2), F64, seed=2),
                   T((2,), F64, "strided", seed=7)), {"groups": 2}),
    # batch_norm lays its output out as torch's CPU kernel: (1, 3, 1, 3) permuted has strides
    # (1, 1, 3, 3), channels_last-contiguous though suggest_memory_format says contiguous;
    # torch gives channels_last (contiguous where a parameter is strided), ours gave NCHW.
    "batch_norm_ambiguous_channels_last": (
        "batch_norm", (T((1, 3, 1, 3), F64, "permuted", True, seed=1), _RM3, _RV3), {}),
    "batch_norm_ambiguous_channels_last_training": (
        "batch_norm", (T((1, 3, 2, 1), F64, "permuted", True, seed=1), _RM3, _RV3,
                       T((3,), F64, requires_grad=True, seed=5)), {"training": True}),
    "batch_norm_ambiguous_strided_weight": (
        "batch_norm", (T((1, 3, 1, 3), F64, "permuted", True, seed=1), _RM3, _RV3,
                       T((3,), F64, "strided", True, seed=5)), {}),
    "batch_norm_channels_last_3d": (
        "batch_norm", (T((1, 2, 1, 1, 3), F64, "permuted", True, seed=1), T((2,), F64, seed=3),
                       T((2,), F64, positive=True, seed=4)), {"training": True}),
    # conv_bn_relu2d is laid out as its conv2d: channels_last for a channels_last weight under
    # an NCHW input (ours followed the input alone).
    "conv_bn_relu2d_channels_last_weight": (
        "conv_bn_relu2d", (_X, T((4, 3, 3, 3), F64, "channels_last", True, seed=2)), _BN),
    "conv_bn_relu2d_channels_last_weight_eval": (
        "conv_bn_relu2d", (_X, T((4, 3, 3, 3), F64, "channels_last", True, seed=2)),
        {**_BN, "training": False}),
    # Adaptive pooling's forward returns an empty output (output_size 0, or avg pooling's
    # empty channels when batched) whose backward torch refuses (RuntimeError); ours gave
    # zeros.
    "adaptive_avg_pool2d_size0_backward": (
        "adaptive_avg_pool2d", (T((1, 1, 1, 1), F64, requires_grad=True),), {"output_size": 0}),
    "adaptive_avg_pool2d_empty_channels_backward": (
        "adaptive_avg_pool2d", (T((2, 0, 3, 3), F64, requires_grad=True),), {"output_size": 2}),
    "adaptive_avg_pool2d_global_empty_channels_backward": (
        "adaptive_avg_pool2d", (T((1, 0, 2, 6), F64, "expanded", True),),
        {"output_size": (1, 1)}),
    # torch's own gradient is wrong here (a strided weight in evaluation; see
    # torch_batch_norm), and a zero-variance batch (expanded input) in float32 is
    # ill-conditioned: torch's own float32 misses the float64 reference as far as ours.
    "batch_norm_eval_strided_weight": (
        "batch_norm", (T((2, 3), F64, requires_grad=True, seed=1), T((3,), F64, "offset"),
                       T((3,), F64, "offset", positive=True),
                       T((3,), F64, "strided", True, seed=2)), {}),
    "batch_norm_zero_variance_float32": (
        "batch_norm", (T((2, 2), torch.float32, "expanded", True), T((2,), torch.float32),
                       T((2,), torch.float32, positive=True), None,
                       T((2,), torch.float32, "expanded", True)),
        {"training": True, "momentum": 0.5}),
    # Only the bias requires a gradient: the backward had not kept the input its weight-grad
    # launch (which yields the bias gradient) reads, and failed (AttributeError).
    "conv2d_bias_only_gradient": (
        "conv2d", (T((2, 2, 3), F64, "offset", seed=1), T((1, 2, 2, 1), F64, "expanded", seed=2)),
        {"bias": T((1,), F64, requires_grad=True, seed=3), "stride": [2], "padding": 1,
         "dilation": (2, 2)}),
    # An empty batch: torch's batch norm uses only the first bn_weight and bn_bias element,
    # whatever their sizes; ours left the other elements' gradients uninitialised.
    "conv_bn_relu2d_empty_batch_long_bn_bias": (
        "conv_bn_relu2d", (T((0, 4, 6, 2), torch.float32, "offset", seed=1),
                           T((2, 2, 2, 1), torch.float32, "offset", True, seed=2)),
        {"running_mean": T((2,), torch.float32, seed=3),
         "running_var": T((2,), torch.float32, "offset", seed=4, positive=True),
         "bn_weight": T((2,), torch.float32, "offset", True, seed=5),
         "bn_bias": T((3,), torch.float32, "offset", True, seed=6), "stride": [2],
         "padding": 1, "groups": 2, "training": False}),
    # A contiguous 1-D input whose 2-D view suggests channels_last (length 1, channels
    # innermost: a permuted (C, 1) unbatched input) gives channels innermost in torch; ours
    # gave a contiguous output (torch makes the input contiguous, which keeps these strides).
    "conv_transpose1d_length1_permuted_input": (
        "conv_transpose1d", (T((3, 1), torch.float32, "permuted", seed=17790),
                             T((3, 1, 2), torch.float32, "strided", True, seed=302)),
        {"stride": 2, "output_padding": 1, "groups": 3, "dilation": 2}),
    "conv1d_length1_permuted_input": (
        "conv1d", (T((3, 1), F64, "permuted", True, seed=1), T((2, 3, 1), F64, seed=2)),
        {"padding": 1}),
    # Routed, the global mean of an empty plane is torch's (NaN): the comparison took NaN
    # for a mismatch.
    "routed_adaptive_avg_pool2d_empty_plane": (
        "routed_adaptive_avg_pool2d", (T((1, 2, 0), layout="permuted"),),
        {"output_size": (1, 1)}),
    "adaptive_max_pool2d_size0_backward": (
        "adaptive_max_pool2d", (T((1, 2, 3, 3), F64, requires_grad=True),),
        {"output_size": (0, 2), "return_indices": True}),
}


@pytest.mark.parametrize("case", FIXED_CASES.values(), ids=FIXED_CASES.keys())
def test_fixed_case(case):
    op, args, kwargs = case
    assert check(*OPS[op], args, kwargs) == "value"


# Error paths the sweep found raising another exception type than torch's (or none), now
# torch's, before any launch. torch parses every argument's type first (TypeError), then its
# lengths, then avg_pool2d indexes size(-3) (IndexError); adaptive pooling runs
# torch.nn.functional's _list_with_default(output_size, input.size()) before anything else.
FIXED_ERROR_CASES = {
    "adaptive_avg_pool2d_list_input": ("adaptive_avg_pool2d", ([[1.0]],), {"output_size": 2}),
    "adaptive_max_pool2d_list_input": ("adaptive_max_pool2d", ([[1.0]],),
                                       {"output_size": (2, 2)}),
    "adaptive_max_pool2d_float_size_int_input": (
        "adaptive_max_pool2d", (T((1, 2, 4, 4), torch.int64),), {"output_size": 1.5}),
    "adaptive_avg_pool2d_float_in_size_int_input": (
        "adaptive_avg_pool2d", (T((1, 2, 4, 4), torch.int64),), {"output_size": (1.5, 2)}),
    "batch_norm_training_strided_int64_only_running_var": (
        "batch_norm", (T((1, 3, 2, 3), torch.int64, "strided", seed=1), None,
                       T((3,), torch.int64, "offset", positive=True, seed=2)),
        {"training": True}),
    "avg_pool2d_2d_input_divisor0": ("avg_pool2d", (T((4, 4)),),
                                     {"kernel_size": 2, "divisor_override": 0}),
    "avg_pool2d_2d_input_int64": ("avg_pool2d", (T((4, 4), torch.int64),), {"kernel_size": 2}),
    "avg_pool2d_2d_input_kernel3": ("avg_pool2d", (T((4, 4)),), {"kernel_size": (1, 2, 3)}),
    "avg_pool2d_kernel3_float_stride": ("avg_pool2d", (T((1, 2, 4, 4)),),
                                        {"kernel_size": (1, 2, 3), "stride": 2.5}),
    "avg_pool2d_pad_neg_float_divisor": ("avg_pool2d", (T((1, 2, 4, 4)),),
                                         {"kernel_size": 2, "padding": -1,
                                          "divisor_override": 1.5}),
    "avg_pool2d_ceil_mode_float": ("avg_pool2d", (T((1, 2, 4, 4)),),
                                   {"kernel_size": 2, "ceil_mode": 1.5}),
    "avg_pool2d_count_include_pad_none": ("avg_pool2d", (T((1, 2, 4, 4)),),
                                          {"kernel_size": 2, "count_include_pad": None}),
    "max_pool2d_2d_input_float_kernel": ("max_pool2d", (T((4, 4)),), {"kernel_size": 2.0}),
    "max_pool2d_pad3_float_dilation": ("max_pool2d", (T((1, 2, 4, 4)),),
                                       {"kernel_size": 2, "padding": (0, 1, 0),
                                        "dilation": 1.5}),
    "max_pool2d_ceil_mode_int": ("max_pool2d", (T((1, 2, 4, 4)),),
                                 {"kernel_size": 2, "ceil_mode": 1}),
    # A zero length or width with a non-empty batch and channels: torch refuses it after the
    # kernel-size check (padding makes that pass); ours returned an empty result.
    "conv1d_zero_length": ("conv1d", (T((2, 4, 0)), T((4, 2, 2)), T((4,))),
                           {"padding": 1, "groups": 2}),
    "conv1d_unbatched_zero_length": ("conv1d", (T((3, 0)), T((3, 1, 1))),
                                     {"padding": 1, "groups": 3}),
    "conv2d_zero_width": ("conv2d", (T((2, 4, 3, 0)), T((4, 4, 2, 2))), {"padding": 1}),
}


@pytest.mark.parametrize("case", FIXED_ERROR_CASES.values(), ids=FIXED_ERROR_CASES.keys())
def test_fixed_error_case(case):
    op, args, kwargs = case
    assert check(*OPS[op], args, kwargs) == "error"


# One fixed case per entry of KNOWN, as (op, args, kwargs, reason): strict xfails, so each
# turns red (remove it then) once the behaviour matches torch's.
KNOWN_CASES = {
    "conv2d_meta_weight": ("conv2d", (_X, T((4, 3, 3, 3), F64, device="meta")), {},
                           KNOWN[0][2]),
    "max_pool2d_int64": ("max_pool2d", (T((1, 2, 4, 4), torch.int64),), {"kernel_size": 2},
                         KNOWN[1][2]),
    "conv_bn_relu2d_strided_running_var": (
        "conv_bn_relu2d", (_X, _W), {**_BN, "running_var": T((4,), F64, "strided",
                                                            positive=True, seed=4)},
        KNOWN[2][2]),
    "conv_bn_relu2d_weight_without_bias": ("conv_bn_relu2d", (_X, _W),
                                           {**_BN, "bn_bias": None}, KNOWN[2][2]),
    "conv2d_empty_input_other_dtype": ("conv2d", (T((0, 3, 5, 5), F64),
                                                  T((4, 3, 3, 3), torch.float32)), {},
                                       KNOWN[3][2]),
    "adaptive_avg_pool2d_global_of_2d": ("adaptive_avg_pool2d", (T((5, 6), F64),),
                                         {"output_size": 1}, KNOWN[4][2]),
    "conv2d_valid_padding_half_bias": (
        "conv2d", (T((1, 2, 6, 5), F64, "channels_last", True, seed=1),
                   T((2, 2, 2, 2), F64, "permuted", True, seed=2),
                   T((2,), torch.float16, "expanded", True, seed=3)),
        {"stride": 2, "padding": "valid"}, known_for(_string_padding_bias_dtype)),
    "conv_bn_relu2d_valid_padding_float_bias": (
        "conv_bn_relu2d", (_X, _W, T((4,), torch.float32, requires_grad=True, seed=7)),
        {**_BN, "padding": "valid"}, known_for(_string_padding_bias_dtype)),
    "conv_bn_relu2d_conv_bias_gradient_noise": (
        "conv_bn_relu2d", (T((2, 4, 1, 2), torch.float32, "offset", True, seed=399),
                           T((4, 2, 1, 1), torch.float32, "permuted", True, seed=463),
                           T((4,), torch.float32, "expanded", True, seed=894)),
        {"running_mean": None, "running_var": None,
         "bn_weight": T((4,), torch.float32, seed=128),
         "bn_bias": T((4,), torch.float32, "permuted", seed=1082), "stride": (1, 2),
         "padding": (1, 2), "dilation": (1, 2), "groups": 2, "training": True,
         "momentum": 1.0, "eps": 0.001}, known_for(_cancellation_noise)),
    # float32, batch 2: output height (2-1)*1 - 2*1 + 0 + 1 = 0
    "conv_transpose2d_output_size_zero": (
        "conv_transpose2d", (T((2, 1, 2, 3)), T((1, 1, 1, 1))), {"padding": 1},
        known_for(_output_size_zero)),
    "conv_bn_act2d_broadcast_residual": (
        "conv_bn_act2d", (_X, _W), {**_BN, "activation": "silu",
                                    "residual": T((1, 4, 1, 1), F64, seed=8)},
        known_for(_residual_contract)),
    "conv_transpose1d_bias_dtype_batch1": (
        "conv_transpose1d", (T((1, 2, 3)), T((2, 2, 1)), T((2,), torch.bfloat16)), {},
        known_for(_transposed_bias_dtype)),
    "conv_transpose1d_output_size_zero": (
        "conv_transpose1d", (T((2, 2, 2)), T((2, 2, 1))), {"padding": 1},
        known_for(_output_size_zero)),
}


@pytest.mark.parametrize("case", [
    pytest.param(v, id=k, marks=pytest.mark.xfail(strict=True, raises=Mismatch, reason=v[3]))
    for k, v in KNOWN_CASES.items()])
def test_known_mismatch(case):
    op, args, kwargs, _ = case
    check(*OPS[op], args, kwargs)


def test_routed_meta_weight_runs_torchs_op():
    """KNOWN's _meta_weight_garbage: torch's CPU convolution with a meta weight returns a CPU
    tensor it computed no values into (its values differ call to call, so no strict xfail can
    pin them); routed, the call runs torch's op, counted as a fallback with the device as its
    reason. Turns red once torch raises or returns a meta result there."""
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 2, 1, 1, device="meta")
    with cnn.enabled() as report:
        y = F.conv2d(x, w)
    assert y.device.type == "cpu" and y.shape == (1, 2, 3, 3)
    ((reason, count),) = report.fallbacks("conv2d").items()
    assert count == 1 and reason.startswith("tensor on ")


def test_routed_check_sees_a_call_routing_missed(monkeypatch):
    """The routed sweep's accounting can fail: a routed function that routing no longer
    takes is not counted."""
    monkeypatch.delitem(cnn.routing.ROUTES, torch.conv2d)
    with pytest.raises(Mismatch, match="routing counted"):
        check(*OPS["routed_conv2d"], (_X, _W), {})


def test_routed_check_sees_a_route_that_launches_nothing(monkeypatch):
    monkeypatch.setitem(cnn.routing.ROUTES, torch.conv2d, ("conv2d", torch.conv2d))
    with pytest.raises(Mismatch, match="launched none of our kernels"):
        check(*OPS["routed_conv2d"], (_X, _W), {})


def test_routed_fallback_names_its_reason():
    routed_max_pool2d = OPS["routed_max_pool2d"][0]
    assert check(routed_max_pool2d, F.max_pool2d, (T((1, 2, 4, 4), torch.int64),),
                 {"kernel_size": 2}) == "value"
    assert routed_max_pool2d.last.startswith("fallback: NotImplementedError: ")


def test_eval_backward_with_strided_running_var():
    """torch 2.13's CPU batch-norm backward in evaluation gives 1/sqrt(eps) everywhere for a
    non-contiguous input with a strided running_var (the reference above reads a contiguous
    copy); ours gives weight / sqrt(running_var + eps)."""
    base = torch.randn(1, 2, 1, device=DEVICE, dtype=F64, requires_grad=True)
    x = base.permute(2, 1, 0)
    running_var = (torch.rand(4, device=DEVICE, dtype=F64) + 1)[::2]
    running_mean = torch.zeros(2, device=DEVICE, dtype=F64)
    y = cnn.functional.batch_norm(x, running_mean, running_var)
    y.backward(torch.ones_like(y))
    expected = (running_var + 1e-5).rsqrt()
    torch.testing.assert_close(base.grad.flatten(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("training", [False, True])
def test_backward_of_channels_last_contiguous_input_under_nchw_grad(training):
    """torch 2.13's CPU batch-norm backward reads a channels_last-contiguous input that
    suggests NCHW (permuted (1, 3, 1, 3): strides (1, 1, 3, 3)) and a contiguous grad_output
    as laid out alike, giving wrong values (the reference above takes the gradient of a
    contiguous copy); ours gives the gradient of the contiguous input."""
    base = torch.randn(3, 1, 3, 1, device=DEVICE, dtype=F64)
    x = base.permute(3, 2, 1, 0).requires_grad_()
    contiguous = x.detach().contiguous().requires_grad_()
    stats = lambda: (torch.zeros(3, device=DEVICE, dtype=F64),
                     torch.ones(3, device=DEVICE, dtype=F64))
    grad = torch.randn(1, 3, 1, 3, device=DEVICE, dtype=F64)
    (got,) = torch.autograd.grad(cnn.functional.batch_norm(x, *stats(), training=training),
                                 x, grad)
    (want,) = torch.autograd.grad(F.batch_norm(contiguous, *stats(), training=training),
                                  contiguous, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

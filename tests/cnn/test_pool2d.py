"""cnn's max/avg pooling (window and adaptive) against torch.nn.functional on the same values:
outputs, indices and input gradients over grids of named edge cases, layouts, dtypes, ties,
NaN, random shapes, gradcheck, the modules, and bad input.

References run torch's op in float64 on the same values, so the only error left is ours: max
pooling must then be exact (its output is one of the inputs, its indices torch's), average
pooling within the rounding of fp32 accumulation and of the output dtype.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import DEVICE, GPU, launches

import cnn
import cnn.functional.pool2d as pooling

# (rtol, atol as a fraction of the reference's largest magnitude, at least 1)
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}
DTYPE_IDS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
             torch.float32: "fp32"}


def assert_close(actual, expected, dtype, what, exact=False):
    rtol, atol = (0.0, 0.0) if exact else TOLERANCES[dtype]
    expected = expected.double()
    finite = expected[expected.isfinite()]
    scale = max(finite.abs().max().item() if finite.numel() else 1.0, 1.0)
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol * scale,
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


def make_input(shape, dtype=torch.float32, layout="nchw"):
    """A random input with the given logical shape in the given layout."""
    if layout == "non_contiguous":
        return torch.randn(*shape[:-1], 2 * shape[-1], device=DEVICE, dtype=dtype)[..., ::2]
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x


def run_both(ours, ref, x, grad_seed=1):
    """ours(x) and ref(x in float64); backward of both with the same random dy.
    Returns (outputs, grad) for ours and for the reference; outputs is (y,) or (y, indices)."""
    x_ours = x.detach().clone().requires_grad_()
    x_ref = x.detach().double().requires_grad_()
    out, out_ref = ours(x_ours), ref(x_ref)
    out = out if isinstance(out, tuple) else (out,)
    out_ref = out_ref if isinstance(out_ref, tuple) else (out_ref,)
    grad = torch.randn(out_ref[0].shape, generator=torch.Generator().manual_seed(grad_seed))
    grad = grad.to(device=x.device, dtype=x.dtype)
    out[0].backward(grad)
    out_ref[0].backward(grad.double())
    return (out, x_ours.grad), (out_ref, x_ref.grad)


def check_max(ours, ref, dtype):
    ((y, idx), dx), ((y_ref, idx_ref), dx_ref) = ours, ref
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_ref), "indices differ from torch's"
    assert_close(y, y_ref, dtype, "output", exact=True)
    assert_close(dx, dx_ref, dtype, "grad_input")


def check_avg(ours, ref, dtype):
    ((y,), dx), ((y_ref,), dx_ref) = ours, ref
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert_close(y, y_ref, dtype, "output")
    assert_close(dx, dx_ref, dtype, "grad_input")


def max_fns(options):
    ours = lambda x: cnn.functional.max_pool2d(x, **options, return_indices=True)
    ref = lambda x: F.max_pool2d(x, **options, return_indices=True)
    return ours, ref


def avg_fns(options):
    return (lambda x: cnn.functional.avg_pool2d(x, **options),
            lambda x: F.avg_pool2d(x, **options))


def adaptive_max_fns(output_size):
    return (lambda x: cnn.functional.adaptive_max_pool2d(x, output_size, return_indices=True),
            lambda x: F.adaptive_max_pool2d(x, output_size, return_indices=True))


def adaptive_avg_fns(output_size):
    return (lambda x: cnn.functional.adaptive_avg_pool2d(x, output_size),
            lambda x: F.adaptive_avg_pool2d(x, output_size))


# ---------------------------------------------------------------------------------------------
# Window pooling: id -> (input shape, kernel_size, stride, padding, dilation, ceil_mode)
WINDOW_CASES = {
    "basic_2x2": ((2, 3, 8, 8), 2, None, 0, 1, False),
    "overlapping_3x3_stride2": ((2, 3, 9, 9), 3, 2, 1, 1, False),
    "overlapping_3x3_stride2_ceil": ((2, 3, 10, 10), 3, 2, 1, 1, True),
    "ceil_last_window_overhangs": ((1, 2, 5, 7), 2, 2, 0, 1, True),
    "ceil_window_starting_in_right_pad_dropped": ((1, 2, 5, 5), 2, 2, 1, 1, True),
    "padding_half_kernel_even": ((2, 3, 7, 7), 4, 2, 2, 1, False),
    "padding_half_kernel_odd_stride1": ((2, 3, 6, 6), 3, 1, 1, 1, False),
    "padding_half_kernel_ceil": ((1, 2, 7, 6), 4, 3, 2, 1, True),
    "non_square_kernel_and_stride": ((2, 3, 9, 12), (2, 3), (1, 2), (1, 1), 1, False),
    "non_square_ceil": ((2, 2, 8, 11), (3, 2), (2, 3), (1, 0), 1, True),
    "output_1x1": ((2, 3, 4, 4), 4, None, 0, 1, False),
    "kernel_1x1_stride2": ((2, 3, 7, 7), 1, 2, 0, 1, False),
    "stride_larger_than_kernel": ((2, 3, 11, 11), 2, 3, 0, 1, False),
    "batch1_one_channel_odd": ((1, 1, 7, 5), 3, 2, 0, 1, False),
    "mnist_2x2": ((2, 8, 28, 28), 2, 2, 0, 1, False),
}
# Dilation: max pooling only (torch's avg_pool2d has none).
DILATED_CASES = {
    "dilation2": ((2, 3, 9, 9), 3, 1, 1, 2, False),
    "dilation2_stride2_ceil": ((2, 3, 10, 10), 3, 2, 1, 2, True),
    "dilation_non_square_ceil": ((1, 2, 10, 9), (3, 2), (2, 3), (1, 1), (2, 3), True),
    "dilation_larger_than_stride_pad_half": ((1, 2, 8, 8), 2, 1, 1, 3, False),
}


def window_options(case):
    shape, k, s, p, d, ceil = case
    return shape, dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


def avg_options(case, count_include_pad=True, divisor_override=None):
    shape, options = window_options(case)
    del options["dilation"]
    return shape, dict(options, count_include_pad=count_include_pad,
                       divisor_override=divisor_override)


@pytest.mark.parametrize("case", [*WINDOW_CASES.values(), *DILATED_CASES.values()],
                         ids=[*WINDOW_CASES, *DILATED_CASES])
def test_max_pool2d_matches_torch(case):
    shape, options = window_options(case)
    check_max(*run_both(*max_fns(options), make_input(shape)), torch.float32)


AVG_MODES = {"include_pad": (True, None), "exclude_pad": (False, None)}
DIVISOR_MODES = {"divisor_override3": (True, 3), "divisor_override_negative": (False, -2)}
DIVISOR_CASES = ["overlapping_3x3_stride2_ceil", "padding_half_kernel_ceil", "non_square_ceil"]


@pytest.mark.parametrize("mode", AVG_MODES.values(), ids=AVG_MODES.keys())
@pytest.mark.parametrize("case", WINDOW_CASES.values(), ids=WINDOW_CASES.keys())
def test_avg_pool2d_matches_torch(case, mode):
    shape, options = avg_options(case, *mode)
    check_avg(*run_both(*avg_fns(options), make_input(shape)), torch.float32)


@pytest.mark.parametrize("mode", DIVISOR_MODES.values(), ids=DIVISOR_MODES.keys())
@pytest.mark.parametrize("name", DIVISOR_CASES)
def test_avg_pool2d_divisor_override(name, mode):
    shape, options = avg_options(WINDOW_CASES[name], *mode)
    check_avg(*run_both(*avg_fns(options), make_input(shape)), torch.float32)


# Adaptive pooling: id -> (input shape, output_size)
ADAPTIVE_CASES = {
    "global_1": ((2, 3, 7, 7), 1),
    "global_tuple_non_square_input": ((2, 3, 5, 9), (1, 1)),
    "divisible": ((2, 3, 8, 8), 2),
    "non_divisible_overlapping": ((2, 3, 10, 7), (3, 4)),
    "output_larger_than_input": ((2, 3, 3, 4), (7, 9)),
    "output_much_larger_than_input": ((1, 2, 2, 3), (9, 10)),
    "none_entry_keeps_input_size": ((2, 3, 5, 6), (None, 2)),
    "same_as_input": ((2, 3, 5, 6), (5, 6)),
    "one_column": ((1, 2, 11, 1), (4, 1)),
    "resnet_head_7x7_to_1": ((2, 16, 7, 7), 1),
}


@pytest.mark.parametrize("case", ADAPTIVE_CASES.values(), ids=ADAPTIVE_CASES.keys())
def test_adaptive_max_pool2d_matches_torch(case):
    shape, size = case
    check_max(*run_both(*adaptive_max_fns(size), make_input(shape)), torch.float32)


@pytest.mark.parametrize("case", ADAPTIVE_CASES.values(), ids=ADAPTIVE_CASES.keys())
def test_adaptive_avg_pool2d_matches_torch(case):
    shape, size = case
    check_avg(*run_both(*adaptive_avg_fns(size), make_input(shape)), torch.float32)


# ---------------------------------------------------------------------------------------------
# Layouts, dtypes

OPS = {
    "max_pool2d": lambda: (max_fns(window_options(WINDOW_CASES["overlapping_3x3_stride2"])[1]),
                           (2, 5, 9, 9), check_max),
    "max_pool2d_dilated": lambda: (max_fns(window_options(DILATED_CASES["dilation2_stride2_ceil"])
                                           [1]), (2, 5, 10, 10), check_max),
    "avg_pool2d": lambda: (avg_fns(avg_options(WINDOW_CASES["non_square_ceil"], False)[1]),
                           (2, 5, 8, 11), check_avg),
    "adaptive_max_pool2d": lambda: (adaptive_max_fns((3, 4)), (2, 5, 10, 7), check_max),
    "adaptive_avg_pool2d": lambda: (adaptive_avg_fns((4, 9)), (2, 5, 3, 7), check_avg),
}


@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
@pytest.mark.parametrize("op", OPS)
def test_layouts(op, layout):
    fns, shape, check = OPS[op]()
    x = make_input(shape, layout=layout)
    ours, ref = run_both(*fns, x)
    check(ours, ref, torch.float32)
    # Output, indices and input gradient come back in the input's memory format, as torch's.
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=fmt) for t in ours[0])
    assert ours[1].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("op", OPS)
def test_unbatched_input(op):
    fns, shape, check = OPS[op]()
    ours, ref = run_both(*fns, make_input(shape[1:]))
    assert ours[0][0].dim() == 3 and ours[1].shape == shape[1:]
    check(ours, ref, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=lambda d: DTYPE_IDS[d])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_dtypes(op, layout, dtype):
    fns, shape, check = OPS[op]()
    check(*run_both(*fns, make_input(shape, dtype, layout)), dtype)


@pytest.mark.parametrize("op", OPS)
def test_expanded_gradient_and_empty_batch(op):
    """``y.sum().backward()`` hands the backward a stride-0 gradient; an empty batch works."""
    fns, shape, _ = OPS[op]()
    ours, ref = fns
    x = make_input(shape).requires_grad_()
    x_ref = x.detach().double().requires_grad_()
    out, out_ref = ours(x), ref(x_ref)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    (out_ref[0] if isinstance(out_ref, tuple) else out_ref).sum().backward()
    assert_close(x.grad, x_ref.grad, torch.float32, "grad_input")

    empty = make_input((0, *shape[1:])).requires_grad_()
    out, out_ref = ours(empty), ref(empty.detach())
    y = out[0] if isinstance(out, tuple) else out
    assert y.shape == (out_ref[0] if isinstance(out_ref, tuple) else out_ref).shape
    y.sum().backward()
    assert empty.grad.shape == empty.shape


def test_int64_index_variant(monkeypatch):
    """The kernels' int64 flat-index variant (tensors past 2**31 elements), on small tensors."""
    from cnn.kernels.pool2d import geometry
    monkeypatch.setattr(geometry, "needs_int64", lambda *args: True)
    for op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
        fns, shape, check = OPS[op]()
        check(*run_both(*fns, make_input(shape, layout="channels_last")), torch.float32)


# ---------------------------------------------------------------------------------------------
# Ties, NaN, -inf: torch keeps the first maximum, lets a NaN win (the last NaN), and reports a
# window of -inf at its first in-bounds tap.

def tied_input(shape, dtype, layout):
    x = torch.randint(0, 3, shape, device=DEVICE).to(dtype)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


MAX_OPS = {
    "window_3x3_stride2_ceil": max_fns(dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "window_dilated": max_fns(dict(kernel_size=(2, 3), stride=1, padding=1, dilation=2)),
    "adaptive": adaptive_max_fns((3, 5)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: DTYPE_IDS[d])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", MAX_OPS)
def test_ties_pick_torch_index(op, layout, dtype):
    x = tied_input((2, 3, 8, 9), dtype, layout)
    check_max(*run_both(*MAX_OPS[op], x), dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", MAX_OPS)
def test_nan_propagates_like_torch(op, layout):
    x = tied_input((2, 3, 8, 9), torch.float32, layout)
    # Several NaNs per window in places, to check which one torch (and we) report.
    nan_at = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.2
    x[nan_at.to(DEVICE)] = float("nan")
    ours, ref = run_both(*MAX_OPS[op], x)
    assert ours[0][0].isnan().any()
    check_max(ours, ref, torch.float32)


@pytest.mark.parametrize("op", MAX_OPS)
def test_all_negative_infinity_windows(op):
    x = torch.full((1, 2, 8, 9), float("-inf"), device=DEVICE)
    x[0, 1, 3:, 4:] = torch.randn(5, 5, device=DEVICE)
    check_max(*run_both(*MAX_OPS[op], x), torch.float32)


def test_dilated_window_without_taps():
    """kernel 2, dilation 3, padding 1 on a 2x2 input: the window's taps (-1, 2) miss the input.
    torch reports -inf at index 2*W + 2 (past the plane) and its own CPU backward then writes
    out of bounds, so the gradient is checked against the math instead: zero."""
    x = torch.randn(1, 2, 2, 2, device=DEVICE, requires_grad=True)
    y, idx = cnn.functional.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x.detach(), 2, 1, 1, 3, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_backward_is_deterministic():
    x = tied_input((2, 4, 11, 11), torch.float32, "nchw").requires_grad_()
    grads = []
    for _ in range(2):
        x.grad = None
        y = cnn.functional.max_pool2d(x, 3, 2, 1) + cnn.functional.avg_pool2d(x, 3, 2, 1)
        y.backward(torch.ones_like(y))
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_indices_skipped_without_grad():
    """Without return_indices or a gradient the kernel skips the int64 index store."""
    x = make_input((2, 3, 9, 9))
    with torch.no_grad():
        y = cnn.functional.max_pool2d(x, 3, 2, 1)
    assert torch.equal(y, F.max_pool2d(x, 3, 2, 1))


def test_adaptive_output_size_zero():
    """An empty output as torch's; its backward refused as torch's is (RuntimeError: an
    empty non-batch dim in grad_output), before any launch."""
    x = make_input((2, 3, 5, 6)).requires_grad_()
    for name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        for fn in (getattr(cnn.functional, name), getattr(F, name)):
            y = fn(x, (0, 2))
            assert y.shape == (2, 3, 0, 2)
            with launches() as launched, pytest.raises(RuntimeError, match="non-zero size"):
                y.sum().backward()
            assert not launched


# ---------------------------------------------------------------------------------------------
# Random shapes, gradcheck

def every_window_has_a_tap(size, k, s, p, d, out):
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
       ceil_mode=st.booleans(), channels_last=st.booleans(), avg=st.booleans(),
       count_include_pad=st.booleans())
def test_random_window_pooling_matches_torch(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                             ceil_mode, channels_last, avg, count_include_pad):
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    if avg:
        dh = dw = 1
    oh = pooling.Pool2dGeometry.window((n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw),
                                       ceil_mode)
    assume(oh.out_h >= 1 and oh.out_w >= 1)
    # torch's CPU backward writes out of bounds for windows without taps (see above).
    assume(every_window_has_a_tap(h, kh, sh, ph, dh, oh.out_h)
           and every_window_has_a_tap(w, kw, sw, pw, dw, oh.out_w))
    x = make_input((n, c, h, w), layout="channels_last" if channels_last else "nchw")
    options = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil_mode)
    if avg:
        check_avg(*run_both(*avg_fns(dict(options, count_include_pad=count_include_pad)), x),
                  torch.float32)
    else:
        check_max(*run_both(*max_fns(dict(options, dilation=(dh, dw))), x), torch.float32)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 12), ow=st.integers(1, 12), channels_last=st.booleans(),
       avg=st.booleans())
def test_random_adaptive_pooling_matches_torch(n, c, h, w, oh, ow, channels_last, avg):
    x = make_input((n, c, h, w), layout="channels_last" if channels_last else "nchw")
    if avg:
        check_avg(*run_both(*adaptive_avg_fns((oh, ow)), x), torch.float32)
    else:
        check_max(*run_both(*adaptive_max_fns((oh, ow)), x), torch.float32)


def distinct_values(shape):
    """float64 values at least 0.1 apart, so gradcheck's perturbations never flip a max."""
    n = torch.Size(shape).numel()
    return (torch.randperm(n).double() * 0.1).reshape(shape).to(DEVICE).requires_grad_()


# id: (input shape, function, fast_mode). The full Jacobian costs the interpreter a kernel
# launch per input and output element, so the tiniest shapes get it and the others torch's
# fast mode (a random projection of the Jacobian, checked both ways).
GRADCHECK_CASES = {
    "max_3x3_stride2_pad1": ((1, 1, 4, 4), lambda x: cnn.functional.max_pool2d(x, 3, 2, 1),
                             False),
    "max_dilated_ceil": ((1, 2, 5, 4), lambda x: cnn.functional.max_pool2d(
        x, (2, 3), (2, 1), 1, (2, 1), True), True),
    "avg_3x3_stride2_ceil_exclude_pad": ((1, 1, 4, 4), lambda x: cnn.functional.avg_pool2d(
        x, 3, 2, 1, ceil_mode=True, count_include_pad=False), False),
    "avg_divisor_override": ((1, 2, 4, 5), lambda x: cnn.functional.avg_pool2d(
        x, 2, 1, 1, divisor_override=3), True),
    "adaptive_max_overlapping": ((1, 2, 5, 4), lambda x: cnn.functional.adaptive_max_pool2d(
        x, (3, 3)), True),
    "adaptive_avg_upsampling": ((1, 1, 2, 3), lambda x: cnn.functional.adaptive_avg_pool2d(
        x, (3, 5)), False),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES.values(), ids=GRADCHECK_CASES.keys())
def test_gradcheck_float64(case):
    shape, fn, fast_mode = case
    assert torch.autograd.gradcheck(fn, (distinct_values(shape),), eps=1e-6, atol=1e-7,
                                    rtol=1e-5, fast_mode=fast_mode)


# ---------------------------------------------------------------------------------------------
# Modules

MODULES = {
    "MaxPool2d": (cnn.MaxPool2d, torch.nn.MaxPool2d,
                  dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True,
                       return_indices=True)),
    "AvgPool2d": (cnn.AvgPool2d, torch.nn.AvgPool2d,
                  dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True,
                       count_include_pad=False)),
    "AdaptiveAvgPool2d": (cnn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d,
                          dict(output_size=(3, None))),
    "AdaptiveMaxPool2d": (cnn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d,
                          dict(output_size=4, return_indices=True)),
}


@pytest.mark.parametrize("name", MODULES)
def test_modules_drop_in(name):
    ours_cls, torch_cls, kwargs = MODULES[name]
    ours, ref = ours_cls(**kwargs), torch_cls(**kwargs)
    assert isinstance(ours, torch_cls) and repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    check = check_max if "Max" in name else check_avg
    for layout in ("nchw", "channels_last"):
        check(*run_both(ours, ref, make_input((2, 3, 9, 8), layout=layout)), torch.float32)
    y = ours(make_input((3, 9, 8)))
    assert (y[0] if isinstance(y, tuple) else y).dim() == 3


# ---------------------------------------------------------------------------------------------
# Bad input: torch's exception type, a message naming the problem, and no kernel launch.

X = (2, 3, 6, 6)
BAD_INPUTS = {
    # id: (op, input shape, args, kwargs, what our message must say)
    "max_pad_over_half_kernel": ("max_pool2d", X, (3, 1, 2), {}, "half of kernel size"),
    "max_pad_over_half_kernel_despite_dilation": ("max_pool2d", X, (3, 1, 2, 2), {},
                                                  "half of kernel size"),
    "max_pad_over_half_non_square": ("max_pool2d", X, ((3, 2), 1, (1, 2)), {},
                                     "half of kernel size"),
    "max_zero_kernel": ("max_pool2d", X, (0, 1), {}, "kernel size should be greater than zero"),
    "max_negative_kernel": ("max_pool2d", X, ((2, -1),), {}, "kernel size should be greater"),
    "max_zero_stride": ("max_pool2d", X, (2, 0), {}, "stride should be greater than zero"),
    "max_negative_stride": ("max_pool2d", X, (2, -1), {}, "stride should be greater than zero"),
    "max_zero_dilation": ("max_pool2d", X, (2, 1, 0, 0), {}, "dilation should be greater"),
    "max_negative_padding": ("max_pool2d", X, (2, 1, -1), {}, "pad must be non-negative"),
    "max_output_too_small": ("max_pool2d", X, (7,), {}, "Output size is too small"),
    "max_output_too_small_dilated": ("max_pool2d", X, (3, 1, 0, 3), {},
                                     "Output size is too small"),
    "max_input_2d": ("max_pool2d", (6, 6), (2,), {}, "3D (unbatched) or 4D (batched)"),
    "max_input_5d": ("max_pool2d", (1, 2, 3, 6, 6), (2,), {}, "3D (unbatched) or 4D"),
    "max_empty_channels": ("max_pool2d", (2, 0, 6, 6), (2,), {}, "optional 0 dim batch size"),
    "max_empty_height_unbatched": ("max_pool2d", (3, 0, 6), (2,), {}, "optional 0 dim batch"),
    "max_kernel_three_values": ("max_pool2d", X, ((2, 2, 2),), {}, "kernel_size must"),
    "max_stride_three_values": ("max_pool2d", X, (2, (1, 1, 1)), {}, "stride must"),
    "max_padding_three_values": ("max_pool2d", X, (2, 2, (1, 1, 1)), {}, "padding must"),
    "max_dilation_three_values": ("max_pool2d", X, (2, 2, 0, (1, 1, 1)), {}, "dilation must"),
    "max_float_kernel": ("max_pool2d", X, (2.0,), {}, "kernel_size"),
    "avg_pad_over_half_kernel": ("avg_pool2d", X, (3, 1, 2), {}, "half of kernel size"),
    "avg_zero_kernel": ("avg_pool2d", X, (0, 1), {}, "kernel size should be greater than zero"),
    "avg_zero_stride": ("avg_pool2d", X, (2, 0), {}, "stride should be greater than zero"),
    "avg_negative_padding": ("avg_pool2d", X, (2, 1, -1), {}, "pad must be non-negative"),
    "avg_output_too_small": ("avg_pool2d", X, (7,), {}, "Output size is too small"),
    "avg_input_2d_index_error": ("avg_pool2d", (6, 6), (2,), {}, "3D (unbatched) or 4D"),
    "avg_input_1d_index_error": ("avg_pool2d", (6,), (2,), {}, "3D (unbatched) or 4D"),
    "avg_input_5d": ("avg_pool2d", (1, 2, 3, 6, 6), (2,), {}, "3D (unbatched) or 4D"),
    "avg_empty_channels": ("avg_pool2d", (2, 0, 6, 6), (2,), {}, "optional 0 dim batch size"),
    "avg_divisor_zero": ("avg_pool2d", X, (2,), dict(divisor_override=0), "divisor must be not"),
    "avg_kernel_three_values": ("avg_pool2d", X, ((2, 2, 2),), {}, "kernel_size must"),
    "avg_float_kernel": ("avg_pool2d", X, (2.0,), {}, "kernel_size"),
    "adaptive_avg_input_2d": ("adaptive_avg_pool2d", (6, 6), (2,), {}, "Expected 3D or 4D"),
    "adaptive_avg_input_5d": ("adaptive_avg_pool2d", (1, 2, 3, 6, 6), (2,), {}, "3D or 4D"),
    "adaptive_avg_output_size_three": ("adaptive_avg_pool2d", X, ((2, 2, 2),), {},
                                       "output_size must be 2"),
    "adaptive_avg_output_size_one": ("adaptive_avg_pool2d", X, ((2,),), {},
                                     "output_size must be 2"),
    "adaptive_avg_negative_output": ("adaptive_avg_pool2d", X, ((-1, 2),), {},
                                     "greater than or equal to 0"),
    "adaptive_avg_empty_height": ("adaptive_avg_pool2d", (2, 3, 0, 6), (2,), {},
                                  "dimension 2 being empty"),
    "adaptive_avg_float_output_size": ("adaptive_avg_pool2d", X, (2.0,), {}, "output_size"),
    "adaptive_avg_none_output_size": ("adaptive_avg_pool2d", X, (None,), {}, "output_size"),
    "adaptive_max_input_2d": ("adaptive_max_pool2d", (6, 6), (2,), {}, "Expected 3D or 4D"),
    "adaptive_max_output_size_three": ("adaptive_max_pool2d", X, ((2, 2, 2),), {},
                                       "output_size must be 2"),
    "adaptive_max_negative_output": ("adaptive_max_pool2d", X, (-1,), {},
                                     "greater than or equal to 0"),
    "adaptive_max_empty_channels": ("adaptive_max_pool2d", (2, 0, 6, 6), (2,), {},
                                    "dimension 1 being empty"),
    "adaptive_max_float_output_size": ("adaptive_max_pool2d", X, (2.0,), {}, "output_size"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_like_torch(case, launched):
    op, shape, args, kwargs, message = case
    x = torch.randn(shape, device=DEVICE)
    with pytest.raises(Exception) as torch_error:
        getattr(F, op)(x, *args, **kwargs)
    with pytest.raises(torch_error.type, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(cnn.functional, op)(x, *args, **kwargs)
    assert not launched, "a kernel was launched for bad input"


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                                "adaptive_max_pool2d"])
def test_integer_input_not_implemented(op, launched):
    # torch's CUDA kernels refuse integer input too (its CPU ones accept some).
    with pytest.raises(NotImplementedError, match="int64"):
        getattr(cnn.functional, op)(torch.ones(1, 2, 4, 4, dtype=torch.int64), 2)
    assert not launched, "a kernel was launched for bad input"


@pytest.mark.skipif(not GPU, reason="larger shapes run compiled on a CUDA device only")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: DTYPE_IDS[d])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_resnet_shapes_on_gpu(dtype, layout):
    x = make_input((16, 64, 112, 112), dtype, layout)
    check_max(*run_both(*max_fns(dict(kernel_size=3, stride=2, padding=1)), x), dtype)
    x = make_input((16, 512, 7, 7), dtype, layout)
    check_avg(*run_both(*adaptive_avg_fns(1), x), dtype)
    x = make_input((32, 32, 28, 28), dtype, layout)
    check_avg(*run_both(*avg_fns(dict(kernel_size=2)), x), dtype)

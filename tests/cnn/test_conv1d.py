"""cnn.functional.conv1d / conv_transpose1d and cnn.Conv1d / cnn.ConvTranspose1d against
torch's on the same values (float64 reference): output and every gradient over named edge
cases, torch's 1-D layouts, gradcheck, the modules (padding modes, output_size), torch's errors
before any launch. 1-D runs as the 2-D ops on a unit-height view."""
import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, assert_matches, conv
from support.conv import check_all
from torch.autograd import gradcheck

import cnn
from cnn.ops import conv2d as conv2d_ops

# id: (N, C_in, L, C_out, kernel, stride, padding, dilation, groups, bias)
CONV1D = {
    "basic_3": (2, 4, 9, 6, 3, 1, 1, 1, 1, True),
    "stride2": (2, 4, 10, 6, 3, 2, 1, 1, 1, True),
    "dilation2": (2, 3, 11, 4, 3, 1, 2, 2, 1, True),
    "groups2": (2, 6, 8, 4, 3, 1, 1, 1, 2, True),
    "depthwise": (2, 4, 8, 8, 3, 2, 1, 1, 4, False),
    "pointwise_1": (2, 16, 6, 12, 1, 1, 0, 1, 1, True),
    "padding_same_even_kernel": (2, 3, 7, 4, 4, 1, "same", 2, 1, True),
    "padding_valid": (2, 3, 7, 4, 3, 1, "valid", 1, 1, False),
    "kernel_as_long_as_input": (1, 3, 5, 2, 5, 1, 0, 1, 1, True),
    "batch1_one_channel": (1, 1, 12, 3, 5, 3, 2, 1, 1, True),
}

# id: (N, C_in, L, C_out, kernel, stride, padding, output_padding, groups, dilation, bias)
CONV_TRANSPOSE1D = {
    "basic_3": (2, 4, 6, 6, 3, 1, 1, 0, 1, 1, True),
    "stride2_output_padding1": (2, 4, 5, 6, 3, 2, 1, 1, 1, 1, True),
    "dilation2_output_padding1": (1, 3, 5, 2, 3, 1, 0, 1, 1, 2, True),
    "groups2": (2, 4, 5, 6, 3, 2, 1, 1, 2, 1, True),
    "depthwise_like_groups": (2, 4, 5, 4, 3, 2, 1, 0, 4, 1, False),
    "upsample_4_stride2": (2, 8, 4, 4, 4, 2, 1, 0, 1, 1, True),
}


def conv1d_inputs(case, dtype=torch.float32):
    n, c_in, length, c_out, k, stride, padding, dilation, groups, bias = case
    x = torch.randn(n, c_in, length, device=DEVICE, dtype=dtype)
    w = torch.randn(c_out, c_in // groups, k, device=DEVICE, dtype=dtype)
    b = torch.randn(c_out, device=DEVICE, dtype=dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose1d_inputs(case, dtype=torch.float32):
    n, c_in, length, c_out, k, stride, padding, output_padding, groups, dilation, bias = case
    x = torch.randn(n, c_in, length, device=DEVICE, dtype=dtype)
    w = torch.randn(c_in, c_out // groups, k, device=DEVICE, dtype=dtype)
    b = torch.randn(c_out, device=DEVICE, dtype=dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                         groups=groups, dilation=dilation)


OPS = {"conv1d": (cnn.functional.conv1d, F.conv1d, CONV1D, conv1d_inputs),
       "conv_transpose1d": (cnn.functional.conv_transpose1d, F.conv_transpose1d,
                            CONV_TRANSPOSE1D, conv_transpose1d_inputs)}
GRID = [(op, case) for op, (_, _, cases, _) in OPS.items() for case in cases]


def run_both(op, x, weight, bias, options):
    """Ours and torch's float64 op on the same values and output gradient."""
    ours, theirs, _, _ = OPS[op]
    return conv.run_both(ours, theirs, x, weight, bias, options)


def inputs(op, case, dtype=torch.float32):
    _, _, cases, make = OPS[op]
    return make(cases[case], dtype)


@pytest.mark.parametrize("op,case", GRID, ids=[f"{op}-{case}" for op, case in GRID])
def test_matches_torch_fp32(op, case):
    check_all(*run_both(op, *inputs(op, case)))


@pytest.mark.parametrize("op", OPS)
def test_unbatched_input(op):
    x, w, b, options = inputs(op, "groups2")
    ours, ref = run_both(op, x[0], w, b, options)
    assert ours[0].dim() == 2
    check_all(ours, ref)


@pytest.mark.parametrize("op", OPS)
def test_empty_batch(op):
    x, w, b, options = inputs(op, "groups2")
    ours, ref = run_both(op, x[:0], w, b, options)
    y, xo, wo, bo = ours
    assert y.shape == ref[0].shape and y.shape[0] == 0 and xo.grad.shape == x[:0].shape
    assert torch.equal(wo.grad, torch.zeros_like(w)) and torch.equal(bo.grad, torch.zeros_like(b))


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_input(op):
    x, w, b, options = inputs(op, "groups2")
    strided = torch.stack((x, x), dim=-1)[..., 0]  # every other element along L
    check_all(*run_both(op, strided, w, b, options))


@pytest.mark.parametrize("x_layout", ["contiguous", "channels_innermost"])
@pytest.mark.parametrize("w_layout", ["contiguous", "channels_innermost"])
@pytest.mark.parametrize("op", OPS)
def test_layouts_follow_torch(op, x_layout, w_layout):
    """torch's 1-D rule (its CPU convolution): the output has its channels innermost when the
    weight does (not when only the input does); dx is laid out like x, dw like w."""
    x, w, b, options = inputs(op, "stride2" if op == "conv1d" else "stride2_output_padding1")
    if x_layout == "channels_innermost":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    if w_layout == "channels_innermost":
        w = w.transpose(1, 2).contiguous().transpose(1, 2)
    ours, ref = run_both(op, x, w, b, options)
    check_all(ours, ref)
    (y, xo, wo, _), (y_ref, x_ref, w_ref, _) = ours, ref
    for mine, torchs, what in [(y, y_ref, "output"), (xo.grad, x_ref.grad, "dx"),
                               (wo.grad, w_ref.grad, "dw")]:
        assert mine.is_contiguous() == torchs.is_contiguous(), what
        assert mine.stride() == torchs.stride(), what


def test_runs_on_unit_height_views(monkeypatch):
    """conv1d hands conv2d views of its tensors (no copies): (N, C, 1, L), (C_out, C_in, 1, K).
    (A plain eager call runs conv2d's implementation inside conv1d's own Function.)"""
    seen = []
    op = conv2d_ops.conv2d.impl

    def spy(x, w, *args):
        seen.append((x.shape, w.shape, x.untyped_storage().data_ptr(),
                     w.untyped_storage().data_ptr()))
        return op(x, w, *args)
    monkeypatch.setattr(conv2d_ops.conv2d, "impl", spy)
    x, w, b, options = inputs("conv1d", "stride2")
    cnn.functional.conv1d(x, w, b, **options)
    assert seen == [((2, 4, 1, 10), (6, 4, 1, 3), x.untyped_storage().data_ptr(),
                     w.untyped_storage().data_ptr())]


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    case = {"conv1d": (1, 2, 5, 2, 3, 2, 1, 2, 1, True),
            "conv_transpose1d": (1, 2, 3, 2, 3, 2, 1, 1, 1, 1, True)}[op]
    _, _, _, make = OPS[op]
    x, w, b, options = make(case, torch.float64)
    fn = lambda x, w, b: OPS[op][0](x, w, b, **options)
    args = [t.requires_grad_() for t in (x, w, b)]
    # Double backward is the 2-D ops' through a view (gradgradcheck in test_double_backward.py
    # and test_conv_transpose2d.py).
    assert gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


# ---------------------------------------------------------------------------------- modules

def twin_modules(ours_cls, torch_cls, *args, **kwargs):
    torch.manual_seed(3)
    ours = ours_cls(*args, **kwargs).to(DEVICE)
    ref = torch_cls(*args, **kwargs).to(DEVICE, torch.float64)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def check_modules(ours, ref, x, *forward_args):
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    y, y_ref = ours(x_ours, *forward_args), ref(x_ref, *forward_args)
    assert y.shape == y_ref.shape
    grad = torch.randn(y_ref.shape, device=DEVICE)
    y.backward(grad)
    y_ref.backward(grad.double())
    assert_matches(y, y_ref, torch.float32, "output")
    assert_matches(x_ours.grad, x_ref.grad, torch.float32, "grad_input")
    for (name, p), (_, p_ref) in zip(ours.named_parameters(), ref.named_parameters(),
                                     strict=True):
        assert_matches(p.grad, p_ref.grad, torch.float32, f"grad {name}")


@pytest.mark.parametrize("cls,torch_cls", [(cnn.Conv1d, torch.nn.Conv1d),
                                           (cnn.ConvTranspose1d, torch.nn.ConvTranspose1d)],
                         ids=["Conv1d", "ConvTranspose1d"])
def test_modules_are_torchs_with_same_state_dict_and_repr(cls, torch_cls):
    ours, ref = twin_modules(cls, torch_cls, 4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    assert isinstance(ours, torch_cls)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_padding_modes_match_torch(padding_mode):
    ours, ref = twin_modules(cnn.Conv1d, torch.nn.Conv1d, 2, 3, 3, padding=2,
                             padding_mode=padding_mode)
    check_modules(ours, ref, torch.randn(2, 2, 7, device=DEVICE))


@pytest.mark.parametrize("output_size", [None, [12], (2, 6, 11)], ids=["none", "length", "full"])
def test_conv_transpose1d_output_size_matches_torch(output_size):
    ours, ref = twin_modules(cnn.ConvTranspose1d, torch.nn.ConvTranspose1d, 4, 6, 3, stride=2,
                             padding=1, groups=2)
    check_modules(ours, ref, torch.randn(2, 4, 6, device=DEVICE), output_size)


def test_conv_transpose1d_module_errors_are_torchs(launched):
    ours, ref = twin_modules(cnn.ConvTranspose1d, torch.nn.ConvTranspose1d, 2, 3, 3, stride=2)
    x = torch.randn(1, 2, 4, device=DEVICE)
    for module in (ours, ref):
        with pytest.raises(ValueError, match="requested an output size"):
            module(x.to(module.weight.dtype), [20])
    with pytest.raises(ValueError, match="zeros"):
        cnn.ConvTranspose1d(2, 3, 3, padding_mode="circular")
    assert not launched


# ----------------------------------------------------------------------------------- errors

x3 = torch.randn(2, 4, 7)
w_conv = torch.randn(6, 4, 3)
w_transposed = torch.randn(4, 3, 3)

# id: (op, input, weight, bias, options, message pattern); torch's exception type is the spec
BAD = {
    "conv1d-input_1d": ("conv1d", torch.randn(7), w_conv, None, {}, "2D \\(unbatched\\) or 3D"),
    "conv1d-input_4d": ("conv1d", torch.randn(1, 2, 4, 7), w_conv, None, {},
                        "2D \\(unbatched\\) or 3D"),
    "conv1d-weight_2d": ("conv1d", x3, w_conv[0], None, {}, "3D weight"),
    "conv1d-weight_4d": ("conv1d", x3, w_conv[..., None], None, {}, "3D weight"),
    "conv1d-channels_mismatch": ("conv1d", x3, torch.randn(6, 3, 3), None, {},
                                 "input\\[2, 4, 7\\] to have 3 channels"),
    "conv1d-groups_zero": ("conv1d", x3, w_conv, None, {"groups": 0}, "non-positive groups"),
    "conv1d-stride_zero": ("conv1d", x3, w_conv, None, {"stride": 0}, "non-positive stride"),
    "conv1d-stride_pair": ("conv1d", x3, w_conv, None, {"stride": (1, 2)}, "list of 1 values"),
    "conv1d-stride_float": ("conv1d", x3, w_conv, None, {"stride": 1.5},
                            "'stride' must be tuple of ints"),
    "conv1d-dilation_zero": ("conv1d", x3, w_conv, None, {"dilation": 0},
                             "non-positive dilation"),
    "conv1d-padding_negative": ("conv1d", x3, w_conv, None, {"padding": -1},
                                "negative padding"),
    "conv1d-padding_same_strided": ("conv1d", x3, w_conv, None, {"padding": "same", "stride": 2},
                                    "'same' is not supported for strided"),
    "conv1d-padding_unknown_string": ("conv1d", x3, w_conv, None, {"padding": "full"},
                                      "Invalid padding string"),
    "conv1d-kernel_too_long": ("conv1d", x3, torch.randn(6, 4, 9), None, {},
                               "padded input size per channel: \\(7\\). Kernel size: \\(9\\)"),
    "conv1d-bias_wrong_size": ("conv1d", x3, w_conv, torch.randn(5), {},
                               "weight of size \\[6, 4, 3\\], expected bias"),
    "conv1d-weight_dtype_mismatch": ("conv1d", x3, w_conv.double(), None, {},
                                     "should be the same"),
    "conv_transpose1d-input_1d": ("conv_transpose1d", torch.randn(7), w_transposed, None, {},
                                  "2D \\(unbatched\\) or 3D"),
    "conv_transpose1d-weight_2d": ("conv_transpose1d", x3, w_transposed[0], None, {},
                                   "3D weight"),
    "conv_transpose1d-channels_mismatch": ("conv_transpose1d", x3, torch.randn(3, 3, 3), None,
                                           {}, "input\\[2, 4, 7\\] to have 3 channels"),
    "conv_transpose1d-stride_pair": ("conv_transpose1d", x3, w_transposed, None,
                                     {"stride": (1, 2)}, "list of 1 values"),
    "conv_transpose1d-padding_string": ("conv_transpose1d", x3, w_transposed, None,
                                        {"padding": "same"}, "'padding' must be tuple of ints"),
    "conv_transpose1d-output_padding_too_big": ("conv_transpose1d", x3, w_transposed, None,
                                                {"stride": 2, "output_padding": 2},
                                                "output_padding_width: 2 stride_height: 1"),
    "conv_transpose1d-output_too_small": ("conv_transpose1d", x3, torch.randn(4, 3, 30), None,
                                          {"padding": 20}, "Output size is too small"),
    "conv_transpose1d-dilation_zero": ("conv_transpose1d", x3, w_transposed, None,
                                       {"dilation": 0}, "non-positive dilation"),
    "conv_transpose1d-bias_wrong_size": ("conv_transpose1d", x3, w_transposed, torch.randn(5),
                                         {}, "expected bias to be 1-dimensional with 3"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_like_torch(case, launched):
    op, inp, weight, bias, options, pattern = case
    ours, theirs, _, _ = OPS[op]
    with pytest.raises(Exception) as torch_error:
        theirs(inp, weight, bias, **options)
    with pytest.raises(torch_error.type, match=pattern):
        ours(inp, weight, bias, **options)
    assert not launched, "a kernel was launched for invalid input"

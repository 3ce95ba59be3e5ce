"""cnn.functional.conv_transpose2d and cnn.ConvTranspose2d against torch's on the same values
(float64 reference): output and every gradient over named edge cases, layouts, dtypes,
gradcheck and gradgradcheck, the module with output_size, torch's errors before any launch."""
import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, assert_matches, conv
from support.conv import check_all
from torch.autograd import gradcheck, gradgradcheck
from torch.fx.experimental.proxy_tensor import make_fx

import cnn

# id: (N, C_in, H, W, C_out, kernel, stride, padding, output_padding, groups, dilation, bias)
CASES = {
    "basic_3x3": (2, 4, 5, 5, 6, 3, 1, 1, 0, 1, 1, True),
    "stride2_output_padding1": (2, 4, 5, 5, 6, 3, 2, 1, 1, 1, 1, True),
    # output_padding >= stride, allowed because it is below the dilation
    "output_padding_below_dilation": (1, 3, 4, 5, 2, 3, 1, 0, 1, 1, 2, True),
    "stride_asymmetric": (2, 3, 4, 5, 4, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1, True),
    "stride_larger_than_kernel": (2, 3, 3, 3, 2, 2, 3, 0, 2, 1, 1, True),
    "dilation2": (2, 4, 5, 5, 6, 3, 1, 2, 0, 1, 2, True),
    "groups2": (2, 4, 5, 5, 6, 3, 2, 1, 1, 2, 1, True),
    "groups3_stride2_dilation2": (2, 6, 4, 5, 9, 3, 2, 2, 1, 3, 2, True),
    # groups == C_out: in conv2d's terms a depthwise input gradient (direct kernels)
    "depthwise_like_groups": (2, 4, 5, 5, 4, 3, 2, 1, 1, 4, 1, True),
    "depthwise_multiplier2": (2, 8, 4, 4, 4, 3, 1, 1, 0, 4, 1, False),
    "pointwise_1x1": (2, 16, 4, 4, 12, 1, 1, 0, 0, 1, 1, True),
    "dcgan_4x4_stride2": (2, 16, 4, 4, 8, 4, 2, 1, 0, 1, 1, False),
    "unet_2x2_stride2": (2, 16, 4, 4, 8, 2, 2, 0, 0, 1, 1, True),
    "tap_major_channels": (1, 20, 3, 3, 17, 3, 2, 1, 1, 1, 1, True),
    "batch1": (1, 3, 4, 4, 2, 3, 2, 0, 0, 1, 1, True),
    "one_channel": (2, 1, 5, 5, 1, 3, 2, 1, 1, 1, 1, True),
    "padding_crops_output": (2, 3, 4, 4, 2, 3, 1, 2, 0, 1, 1, True),
    "non_square_kernel": (2, 3, 4, 6, 4, (1, 5), 1, (0, 2), 0, 1, 1, True),
}

LAYOUTS = ["channels_last", "channels_last_weight", "non_contiguous"]


def make_inputs(case, dtype=torch.float32, layout="nchw"):
    n, c_in, h, w, c_out, k, stride, padding, output_padding, groups, dilation, bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c_in, h, w, device=DEVICE, dtype=dtype)
    weight = torch.randn(c_in, c_out // groups, kh, kw, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channels_last_weight":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif layout == "non_contiguous":
        x = torch.randn(n, c_in, h, 2 * w, device=DEVICE, dtype=dtype)[..., ::2]
    b = torch.randn(c_out, device=DEVICE, dtype=dtype) if bias else None
    return x, weight, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                              groups=groups, dilation=dilation)


def run_both(x, weight, bias, options):
    """Ours and torch's float64 op on the same values and output gradient."""
    return conv.run_both(cnn.functional.conv_transpose2d, F.conv_transpose2d, x, weight, bias,
                         options)


def layout_of(t):
    return (t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch_fp32(case):
    check_all(*run_both(*make_inputs(case)), torch.float32)


LAYOUT_CASES = [("stride2_output_padding1", layout) for layout in LAYOUTS] + \
    [("tap_major_channels", "channels_last")]


@pytest.mark.parametrize("name,layout", LAYOUT_CASES, ids=["-".join(c) for c in LAYOUT_CASES])
def test_layouts_follow_torch(name, layout):
    """Values, and torch's layouts: y channels_last when x or w is, dx like x, dw like w."""
    ours, ref = run_both(*make_inputs(CASES[name], layout=layout))
    check_all(ours, ref, torch.float32)
    (y, x, w, _), (y_ref, x_ref, w_ref, _) = ours, ref
    for mine, torchs, what in [(y, y_ref, "output"), (x.grad, x_ref.grad, "dx"),
                               (w.grad, w_ref.grad, "dw")]:
        assert layout_of(mine) == layout_of(torchs), what


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["stride2_output_padding1", "depthwise_like_groups"])
def test_dtypes(name, dtype):
    check_all(*run_both(*make_inputs(CASES[name], dtype=dtype)), dtype)


def test_unbatched_input():
    x, w, b, options = make_inputs(CASES["stride2_output_padding1"])
    ours, ref = run_both(x[0], w, b, options)
    assert ours[0].dim() == 3
    check_all(ours, ref, torch.float32)


def test_empty_batch():
    x, w, b, options = make_inputs(CASES["stride2_output_padding1"])
    ours, ref = run_both(x[:0], w, b, options)
    y, xo, wo, bo = ours
    assert y.shape == ref[0].shape == (0, 6, 10, 10)
    assert xo.grad.shape == (0, 4, 5, 5)
    assert torch.equal(wo.grad, torch.zeros_like(w)) and torch.equal(bo.grad, torch.zeros_like(b))


def test_only_the_weight_gradient():
    x, w, b, options = make_inputs(CASES["groups2"])
    w_ours = w.clone().requires_grad_()
    cnn.functional.conv_transpose2d(x, w_ours, b, **options).sum().backward()
    w_ref = w.double().requires_grad_()
    F.conv_transpose2d(x.double(), w_ref, b.double(), **options).sum().backward()
    assert_matches(w_ours.grad, w_ref.grad, torch.float32, "grad_weight")


def test_runs_conv2d_kernels_only(launched):
    """The forward is conv2d's input-gradient kernel; dx conv2d's forward kernel, dw its
    weight-gradient kernel (torch's convolution never runs)."""
    x, w, b, options = make_inputs(CASES["groups2"])
    x.requires_grad_(), w.requires_grad_()
    y = cnn.functional.conv_transpose2d(x, w, b, **options)
    assert launched == ["conv2d_input_grad_kernel"]
    launched.clear()
    y.sum().backward()
    assert "conv2d_forward_kernel" in launched and "conv2d_weight_grad_kernel" in launched
    assert set(launched) <= {"conv2d_forward_kernel", "conv2d_weight_grad_kernel",
                             "conv2d_weight_grad_reduce_kernel"}


# Tiny shapes: gradcheck costs launches, each an interpreted one.
GRADCHECK_CASES = {
    "stride2_output_padding1": (1, 2, 3, 3, 2, 3, 2, 1, 1, 1, 1, True),
    "depthwise_like_groups": (2, 2, 3, 3, 2, 3, 2, 1, 1, 2, 1, False),
}
GRADGRADCHECK_CASE = (1, 4, 3, 2, 4, (2, 3), (1, 2), (1, 0), (0, 1), 2, 2, True)


def gradcheck_inputs(case):
    x, w, b, options = make_inputs(case, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = lambda *ts: cnn.functional.conv_transpose2d(ts[0], ts[1], ts[2] if len(ts) > 2 else None,
                                                     **options)
    return fn, inputs


@pytest.mark.parametrize("case", GRADCHECK_CASES.values(), ids=GRADCHECK_CASES.keys())
def test_gradcheck_float64(case):
    # fast_mode: random projections of the Jacobian, a few dozen interpreted launches.
    assert gradcheck(*gradcheck_inputs(case), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_gradgradcheck_float64():
    """Double backward (groups, dilation, asymmetric stride and output_padding, bias): the
    gradients are conv2d's differentiable ops."""
    assert gradgradcheck(*gradcheck_inputs(GRADGRADCHECK_CASE), fast_mode=True)


def test_autocast_runs_in_the_autocast_dtype_like_torch():
    x, w, b, options = make_inputs(CASES["stride2_output_padding1"])
    device_type = DEVICE.type
    with torch.autocast(device_type, dtype=torch.bfloat16):
        y = cnn.functional.conv_transpose2d(x, w, b, **options)
        y_ref = F.conv_transpose2d(x, w, b, **options)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert_matches(y, y_ref.double(), torch.bfloat16, "autocast output")


def test_library_op_is_used_under_tracing():
    x, w, b, options = make_inputs(CASES["stride2_output_padding1"])
    fn = lambda x, w, b: cnn.functional.conv_transpose2d(x, w, b, **options)
    graph = make_fx(fn)(x, w, b)
    assert "cnn.conv_transpose2d" in str(graph.code)


# ----------------------------------------------------------------------------------- module

def twin_modules(*args, **kwargs):
    torch.manual_seed(3)
    ours = cnn.ConvTranspose2d(*args, **kwargs)
    ref = torch.nn.ConvTranspose2d(*args, **kwargs).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_module_is_a_torch_conv_transpose_with_same_state_dict_and_repr():
    ours, ref = twin_modules(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                             dilation=1, bias=False)
    assert isinstance(ours, torch.nn.ConvTranspose2d)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours) == repr(ref)
    ours.load_state_dict(torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                                  groups=2, bias=False).state_dict())


@pytest.mark.parametrize("output_size", [None, [9, 10], (2, 6, 10, 9)],
                         ids=["none", "spatial", "full"])
def test_module_matches_torch(output_size):
    ours, ref = twin_modules(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    ours, ref = ours.to(DEVICE), ref.to(DEVICE)
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    y, y_ref = ours(x_ours, output_size), ref(x_ref, output_size)
    assert y.shape == y_ref.shape
    grad = torch.randn(y_ref.shape, device=DEVICE)
    y.backward(grad)
    y_ref.backward(grad.double())
    assert_matches(y, y_ref, torch.float32, "output")
    assert_matches(x_ours.grad, x_ref.grad, torch.float32, "grad_input")
    assert_matches(ours.weight.grad, ref.weight.grad, torch.float32, "grad_weight")
    assert_matches(ours.bias.grad, ref.bias.grad, torch.float32, "grad_bias")


def test_module_unbatched_with_output_size():
    ours, ref = twin_modules(2, 3, 4, stride=2, padding=1)
    x = torch.randn(2, 4, 4, device=DEVICE)
    y, y_ref = ours.to(DEVICE)(x, [9, 9]), ref.to(DEVICE)(x.double(), [9, 9])
    assert y.shape == y_ref.shape == (3, 9, 9)
    assert_matches(y, y_ref, torch.float32, "output")


def test_module_errors_are_torchs(launched):
    ours, ref = twin_modules(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 4, 4)
    for module in (ours, ref):
        with pytest.raises(ValueError, match="requested an output size"):
            module(x.to(module.weight.dtype), [20, 20])
    with pytest.raises(ValueError, match="zeros"):
        cnn.ConvTranspose2d(2, 3, 3, padding_mode="reflect")
    ours.padding_mode = "reflect"  # set after construction: refused in forward, as torch does
    with pytest.raises(ValueError, match="Only `zeros` padding mode"):
        ours(x)
    assert not launched


# ----------------------------------------------------------------------------------- errors

x4 = torch.randn(2, 4, 5, 5)
w4 = torch.randn(4, 3, 3, 3)

# id: (input, weight, bias, options, message pattern); torch's exception type is the spec
BAD = {
    "input_2d": (torch.randn(5, 5), w4, None, {}, "3D \\(unbatched\\) or 4D"),
    "input_5d": (torch.randn(1, 2, 4, 5, 5), w4, None, {}, "3D \\(unbatched\\) or 4D"),
    "weight_3d": (x4, torch.randn(4, 3, 3), None, {}, "4D weight"),
    "channels_mismatch": (x4, torch.randn(3, 3, 3, 3), None, {}, "to have 3 channels"),
    "groups_not_dividing": (x4, w4, None, {"groups": 3}, "divisible by 3"),
    "groups_above_channels": (x4, w4, None, {"groups": 8}, "at least 8"),
    "groups_zero": (x4, w4, None, {"groups": 0}, "non-positive groups"),
    "groups_float": (x4, w4, None, {"groups": 1.0}, "'groups' must be int"),
    "stride_zero": (x4, w4, None, {"stride": 0}, "non-positive stride"),
    "stride_float": (x4, w4, None, {"stride": 1.5}, "'stride' must be tuple of ints"),
    "stride_three_values": (x4, w4, None, {"stride": (1, 2, 3)}, "list of 2 values"),
    "dilation_zero": (x4, w4, None, {"dilation": 0}, "non-positive dilation"),
    "dilation_negative": (x4, w4, None, {"dilation": -1}, "greater than zero"),
    "padding_negative": (x4, w4, None, {"padding": -1}, "negative padding"),
    "padding_string": (x4, w4, None, {"padding": "same"}, "'padding' must be tuple of ints"),
    "output_padding_negative": (x4, w4, None, {"stride": 2, "output_padding": -1},
                                "negative output_padding"),
    "output_padding_not_below_stride": (x4, w4, None, {"stride": 2, "output_padding": 2},
                                        "smaller than either stride or dilation"),
    "output_padding_float": (x4, w4, None, {"output_padding": 0.5},
                             "'output_padding' must be tuple of ints"),
    "output_too_small": (torch.randn(1, 4, 1, 1), torch.randn(4, 3, 2, 2), None,
                         {"padding": 1}, "Output size is too small"),
    "empty_spatial_input": (torch.randn(2, 4, 0, 5), w4, None, {}, "zero batch or zero channel"),
    "empty_weight": (x4, torch.randn(4, 0, 3, 3), None, {}, "non-empty 4D weight"),
    "weight_dtype_mismatch": (x4, w4.double(), None, {}, "should be the same"),
    "bias_dtype_mismatch": (x4, w4, torch.randn(3).double(), {}, "bias type"),
    "bias_wrong_size": (x4, w4, torch.randn(4), {}, "bias to be 1-dimensional with 3"),
    "bias_2d": (x4, w4, torch.randn(1, 3), {}, "bias to be 1-dimensional with 3"),
    "input_not_a_tensor": ([[1.0]], w4, None, {}, "'input' \\(position 1\\) must be Tensor"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_like_torch(case, launched):
    inp, weight, bias, options, pattern = case
    with pytest.raises(Exception) as torch_error:
        F.conv_transpose2d(inp, weight, bias, **options)
    with pytest.raises(torch_error.type, match=pattern):
        cnn.functional.conv_transpose2d(inp, weight, bias, **options)
    assert not launched, "a kernel was launched for invalid input"


def test_integer_input_is_refused(launched):
    with pytest.raises(RuntimeError, match="supports float16, bfloat16, float32 and float64"):
        cnn.functional.conv_transpose2d(x4.long(), w4.long())
    assert not launched, "a kernel was launched for invalid input"

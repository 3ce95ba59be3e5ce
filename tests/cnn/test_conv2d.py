"""cnn.functional.conv2d and cnn.Conv2d against torch.nn.functional.conv2d: output and every
gradient, over a grid of named edge cases, random shapes, gradcheck, layouts and dtypes."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DEVICE, GPU, assert_matches, conv
from support.conv import check_all

import cnn

# id: (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups, bias)
CASES = {
    "basic_3x3": (2, 4, 9, 9, 6, 3, 1, 1, 1, 1, True),
    "batch1": (1, 3, 8, 8, 5, 3, 1, 1, 1, 1, True),
    "one_input_channel": (3, 1, 12, 12, 8, 3, 1, 1, 1, 1, True),
    "odd_sizes": (2, 3, 11, 7, 5, 3, 1, 0, 1, 1, True),
    "non_pow2_channels": (2, 19, 6, 6, 23, 3, 1, 1, 1, 1, True),
    "stride2": (2, 4, 10, 10, 6, 3, 2, 1, 1, 1, True),
    "stride_asymmetric": (2, 4, 10, 9, 6, (3, 2), (2, 3), (1, 0), 1, 1, True),
    "stride_larger_than_kernel": (2, 3, 13, 13, 4, 2, 3, 0, 1, 1, True),
    "dilation2": (2, 4, 11, 11, 6, 3, 1, 2, 2, 1, True),
    "dilation_asymmetric": (1, 3, 12, 10, 4, 3, 2, (2, 1), (2, 3), 1, True),
    "groups2": (2, 6, 8, 8, 4, 3, 1, 1, 1, 2, True),
    "groups3_stride2_dilation2": (2, 6, 10, 11, 9, 3, 2, 2, 2, 3, True),
    "depthwise": (2, 8, 8, 8, 8, 3, 1, 1, 1, 8, True),
    "depthwise_multiplier2": (2, 4, 7, 7, 8, 3, 2, 1, 1, 4, True),
    "depthwise_5x5_dilated_strided": (2, 6, 13, 11, 6, (5, 3), (2, 1), (4, 1), (2, 1), 6, False),
    "depthwise_many_channels": (1, 70, 5, 5, 140, 3, 1, 1, 1, 70, True),
    "kernel_as_large_as_padded_input": (2, 3, 5, 5, 4, 7, 1, 1, 1, 1, True),
    "kernel_equals_input_no_padding": (2, 3, 5, 5, 4, 5, 1, 0, 1, 1, True),
    "pointwise_1x1": (2, 16, 6, 6, 12, 1, 1, 0, 1, 1, True),
    "downsample_1x1_stride2": (2, 8, 9, 9, 16, 1, 2, 0, 1, 1, False),
    "stem_7x7_stride2": (1, 3, 20, 20, 8, 7, 2, 3, 1, 1, False),
    "non_square_kernel": (2, 3, 9, 12, 4, (1, 5), 1, (0, 2), 1, 1, True),
    "no_bias": (2, 4, 9, 9, 6, 3, 1, 1, 1, 1, False),
    "padding_same_odd_kernel": (2, 3, 7, 9, 4, 3, 1, "same", 1, 1, True),
    "padding_same_even_kernel": (2, 3, 7, 9, 4, (4, 2), 1, "same", (1, 2), 1, True),
    "padding_valid": (2, 3, 7, 9, 4, 3, 1, "valid", 1, 1, True),
    "padding_larger_than_kernel": (1, 2, 4, 4, 3, 3, 1, 3, 1, 1, True),
    "mnist_conv1": (4, 1, 28, 28, 32, 3, 1, 1, 1, 1, True),
    "mnist_conv2": (2, 32, 14, 14, 64, 3, 1, 1, 1, 1, True),
}

LAYOUTS = ["nchw", "channels_last", "non_contiguous"]


def make_inputs(case, dtype=torch.float32, layout="nchw"):
    n, c_in, h, w, c_out, k, stride, padding, dilation, groups, bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c_in, h, w, device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "non_contiguous":
        x = torch.randn(n, c_in, h, 2 * w, device=DEVICE, dtype=dtype)[..., ::2]
    weight = torch.randn(c_out, c_in // groups, kh, kw, device=DEVICE, dtype=dtype)
    b = torch.randn(c_out, device=DEVICE, dtype=dtype) if bias else None
    return x, weight, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def run_both(x, weight, bias, options, grad_seed=1):
    """Our conv and torch's float64 conv on the same values; returns both results' tensors."""
    return conv.run_both(cnn.functional.conv2d, F.conv2d, x, weight, bias, options, grad_seed)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch_fp32(case):
    check_all(*run_both(*make_inputs(case)), torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("name", ["basic_3x3", "groups3_stride2_dilation2", "depthwise",
                                  "depthwise_5x5_dilated_strided", "stride_asymmetric"])
def test_layouts(name, layout):
    x, w, b, options = make_inputs(CASES[name], layout=layout)
    ours, ref = run_both(x, w, b, options)
    check_all(ours, ref, torch.float32)
    # Output and input gradient come back in the input's memory format, as torch's do.
    y, x_ours = ours[0], ours[1]
    expected_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=expected_format)
    assert x_ours.grad.is_contiguous(memory_format=expected_format)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp16", "bf16", "fp64"])
@pytest.mark.parametrize("name", ["basic_3x3", "groups3_stride2_dilation2", "mnist_conv1",
                                  "non_pow2_channels", "depthwise_multiplier2"])
def test_dtypes(name, dtype):
    check_all(*run_both(*make_inputs(CASES[name], dtype=dtype)), dtype)


def test_unbatched_input():
    x, w, b, options = make_inputs(CASES["stride2"])
    ours, ref = run_both(x[0], w, b, options)
    assert ours[0].shape == ref[0].shape and ours[0].dim() == 3
    check_all(ours, ref, torch.float32)


def test_empty_batch():
    x, w, b, options = make_inputs(CASES["basic_3x3"])
    x = x[:0]
    ours, ref = run_both(x, w, b, options)
    y, xo, wo, bo = ours
    assert y.shape == ref[0].shape == (0, 6, 9, 9)
    assert xo.grad.shape == x.shape
    assert torch.equal(wo.grad, torch.zeros_like(w)) and torch.equal(bo.grad, torch.zeros_like(b))


def test_only_some_gradients():
    x, w, b, options = make_inputs(CASES["groups2"])
    w_ours = w.clone().requires_grad_()
    y = cnn.functional.conv2d(x, w_ours, b, **options)
    y.sum().backward()
    w_ref = w.double().requires_grad_()
    F.conv2d(x.double(), w_ref, b.double(), **options).sum().backward()
    assert_matches(w_ours.grad, w_ref.grad, torch.float32, "grad_weight")


GRADCHECK_CASES = {
    "plain": (1, 2, 5, 5, 3, 3, 1, 1, 1, 1, True),
    "stride2_dilation2": (2, 2, 7, 6, 2, 3, 2, 2, 2, 1, True),
    "groups2_asymmetric": (1, 4, 5, 6, 4, (2, 3), (2, 1), (1, 0), 1, 2, True),
    "same_even_kernel": (1, 2, 4, 5, 2, 2, 1, "same", 1, 1, False),
    "depthwise_multiplier2": (2, 2, 5, 5, 4, 3, 2, 1, 1, 2, True),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES.values(), ids=GRADCHECK_CASES.keys())
def test_gradcheck_float64(case):
    x, w, b, options = make_inputs(case, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = lambda *ts: cnn.functional.conv2d(ts[0], ts[1], ts[2] if len(ts) > 2 else None,
                                           **options)
    # fast_mode checks random projections of the Jacobian: a few dozen interpreted launches
    # instead of one per input element.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3), groups=st.integers(1, 3), c_in_g=st.integers(1, 5),
    c_out_g=st.integers(1, 5), h=st.integers(1, 10), w=st.integers(1, 10),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
    bias=st.booleans(), channels_last=st.booleans(),
)
def test_random_shapes_match_torch(n, groups, c_in_g, c_out_g, h, w, kh, kw, sh, sw, ph, pw,
                                   dh, dw, bias, channels_last):
    # Only shapes torch accepts: the dilated kernel must fit the padded input.
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        return
    case = (n, groups * c_in_g, h, w, groups * c_out_g, (kh, kw), (sh, sw), (ph, pw), (dh, dw),
            groups, bias)
    layout = "channels_last" if channels_last else "nchw"
    check_all(*run_both(*make_inputs(case, layout=layout)), torch.float32)


@pytest.mark.skipif(not GPU, reason="larger shapes run compiled on a CUDA device only")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_resnet_shapes_on_gpu(dtype, layout):
    for case in [(8, 64, 56, 56, 64, 3, 1, 1, 1, 1, False),
                 (8, 3, 224, 224, 64, 7, 2, 3, 1, 1, False),
                 (8, 128, 28, 28, 256, 1, 2, 0, 1, 1, False),
                 (8, 256, 14, 14, 256, 3, 1, 1, 1, 1, True)]:
        check_all(*run_both(*make_inputs(case, dtype=dtype, layout=layout)), dtype)


def test_depthwise_runs_the_direct_kernels(monkeypatch):
    from cnn.kernels.conv2d import forward, input_grad, weight_grad

    def forbidden(*args, **kwargs):
        raise AssertionError("depthwise went through the implicit GEMM")
    for module in (forward, input_grad, weight_grad):
        for name in ("conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, forbidden)
    x, w, b, options = make_inputs(CASES["depthwise_multiplier2"], layout="channels_last")
    check_all(*run_both(x, w, b, options), torch.float32)


def test_int64_offsets_path(monkeypatch):
    # Tensors past 2**31 elements take 64-bit offsets; force that path on a small shape.
    from cnn.kernels.conv2d import forward, input_grad, weight_grad
    for module in (forward, input_grad, weight_grad):
        monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    check_all(*run_both(*make_inputs(CASES["groups3_stride2_dilation2"])), torch.float32)


def test_strided_bias():
    # A bias that is a view with stride 2 is read at its stride, not as if contiguous.
    x, w, _, options = make_inputs(CASES["basic_3x3"])
    bias = torch.randn(2 * w.shape[0], device=DEVICE)[::2]
    check_all(*run_both(x, w, bias, options), torch.float32)


@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("w_layout", ["nchw", "channels_last"])
def test_output_layouts_follow_torch(x_layout, w_layout):
    # 16 channels: the tap-major loop. torch's rule: the output is channels_last when the input
    # or the weight is; the input gradient follows the input (torch's CPU reference).
    x, w, b, options = make_inputs((1, 16, 6, 5, 16, 3, 1, 1, 1, 1, True), layout=x_layout)
    if w_layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    ours, ref = run_both(x, w, b, options)
    check_all(ours, ref, torch.float32)
    for mine, torchs, what in [(ours[0], ref[0], "output"), (ours[1].grad, ref[1].grad, "dx")]:
        for layout in (torch.channels_last, torch.contiguous_format):
            assert mine.is_contiguous(memory_format=layout) == \
                torchs.is_contiguous(memory_format=layout), (what, layout)


def test_autotune_keys_ignore_batch_and_image_size():
    # A new batch size (the last partial batch, the evaluation batch) must reuse the tuned
    # tile: the keys hold a bucketed M and no raw batch, height or width.
    import importlib

    from cnn.kernels.conv2d.geometry import Conv2dGeometry
    forward = importlib.import_module("cnn.kernels.conv2d.forward")
    input_grad = importlib.import_module("cnn.kernels.conv2d.input_grad")
    keys = {}
    for batch in (31, 32):
        x = torch.empty(batch, 32, 14, 14, device="meta")
        w = torch.empty(64, 32, 3, 3, device="meta")
        g = Conv2dGeometry.from_shapes(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        *_, fwd_args = forward.launch_arguments(x, w, None, g)
        dy = torch.empty(g.output_shape, device="meta")
        *_, dx_args = input_grad.launch_arguments(dy, w, x, g)
        for name, kernel, args in [("fwd", forward.conv2d_forward_kernel, fwd_args),
                                   ("dx", input_grad.conv2d_input_grad_kernel, dx_args)]:
            assert not {"N", "H", "W", "OH", "OW"} & set(kernel.keys)
            keys.setdefault(name, []).append([args[k] for k in kernel.keys])
    assert keys["fwd"][0] == keys["fwd"][1] and keys["dx"][0] == keys["dx"][1]


def test_configs_pruned_to_the_problem():
    import triton
    from cnn.kernels.conv2d.configs import IMPLICIT_GEMM_TILES_GPU, channel_block, prune_gemm_tiles
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w,
                             num_stages=s) for m, n, k, w, s in IMPLICIT_GEMM_TILES_GPU]
    kept = prune_gemm_tiles(configs, n_cols=64, k_span=32)
    assert all(c.kwargs["BLOCK_N"] <= 64 and c.kwargs["BLOCK_K"] <= 32 for c in kept)
    assert len({(tuple(c.kwargs.items()), c.num_warps, c.num_stages) for c in kept}) == len(kept)
    assert prune_gemm_tiles(configs, n_cols=1, k_span=1)[0].kwargs["BLOCK_K"] == 16
    # Each narrowed tile keeps one 16-byte copy per thread for both operands: 128x32x32 fp16
    # from 128x64x32 over 8 warps (a 2 KB B tile) drops to 4 warps; fp32 keeps 8.
    for element_size, warps in ((2, 4), (4, 8)):
        kept = prune_gemm_tiles(configs, n_cols=32, k_span=32, element_size=element_size)
        narrowed = [c for c in kept if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) == (128, 32)]
        assert {c.num_warps for c in narrowed} == {4, warps}
        assert all(min(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"]
                   * element_size // 16 >= 32 * c.num_warps for c in kept)
    assert [channel_block(c) for c in (16, 32, 48, 64, 128, 20, 100)] == \
        [(16, True), (32, True), (16, True), (64, True), (64, True), (32, False), (64, False)]

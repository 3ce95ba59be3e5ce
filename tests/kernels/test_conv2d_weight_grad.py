"""The implicit-GEMM weight gradient (kernels/conv2d/weight_grad.py): the bias gradient's long
reduction against float64, tap-major tiles (>= 16 input channels per group) over strides,
dilations, groups and padding in float64, the launches it takes and the layout and dtype it
writes, and autotune keys that do not change with the batch."""
import functools
import importlib

import pytest
import torch
import torch.nn.functional as F
from cnn.kernels.conv2d.geometry import Conv2dGeometry
from support import DEVICE, assert_matches

from cnn import kernels

weight_grad = importlib.import_module("cnn.kernels.conv2d.weight_grad")


def geometry_for(x, weight, stride=1, padding=0, dilation=1, groups=1):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    (ph, pw), stride, dilation = pair(padding), pair(stride), pair(dilation)
    return Conv2dGeometry.from_shapes(x.shape, weight.shape, stride, (ph, ph, pw, pw), dilation,
                                      groups)


def test_bias_gradient_is_as_accurate_as_torch_on_a_long_reduction():
    # A conv bias followed by batch norm: dy sums to zero per channel in exact arithmetic, so
    # any error is the reduction's. 2**17 rows (N*OH*OW) per channel.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 128, 128, generator=gen)
    g = torch.randn(8, 16, 128, 128, generator=gen, dtype=torch.float64) + 3.0
    dy = (g - g.mean((0, 2, 3), keepdim=True)).float()
    weight = torch.randn(16, 1, 1, 1)
    exact = dy.double().sum((0, 2, 3))
    _, db = kernels.conv2d.conv2d_weight_grad(dy.to(DEVICE), x.to(DEVICE), weight.to(DEVICE),
                                       geometry_for(x, weight), need_bias=True)
    ours = (db.cpu().double() - exact).abs().max().item()
    torch_fp32 = (dy.sum((0, 2, 3)).double() - exact).abs().max().item()
    assert ours <= torch_fp32, (ours, torch_fp32)


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups): >= 16 channels per group.
TAP_MAJOR_CASES = {
    "3x3": (2, 16, 6, 5, 8, 3, 1, 1, 1, 1),
    "stride2_dilation2": (2, 16, 9, 8, 4, 3, 2, 2, 2, 1),
    "asymmetric": (1, 32, 7, 6, 5, (3, 2), (2, 1), (1, 0), (1, 2), 1),
    "groups2": (2, 32, 5, 5, 6, 3, 1, 1, 1, 2),
    "pointwise_stride2": (2, 24, 7, 7, 8, 1, 2, 0, 1, 1),
    "kernel_past_input": (1, 16, 3, 3, 4, 5, 1, 2, 1, 1),
}


@pytest.mark.parametrize("case", TAP_MAJOR_CASES.values(), ids=TAP_MAJOR_CASES.keys())
def test_tap_major_matches_torch_in_float64(case):
    # NCHW input: the launcher's conversion; channels_last input is the next test's.
    n, c_in, h, w, c_out, k, stride, padding, dilation, groups = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c_in, h, w, device=DEVICE, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, kh, kw, device=DEVICE, dtype=torch.float64)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, weight.requires_grad_(), **options)
    dy = torch.randn_like(y)
    dw_ref, = torch.autograd.grad(y, weight, dy)
    g = geometry_for(x, weight, stride, padding, dilation, groups)
    assert g.in_per_group >= weight_grad.TAP_MAJOR_MIN_CHANNELS
    dw, db = kernels.conv2d.conv2d_weight_grad(dy, x, weight.detach(), g, need_bias=True)
    assert_matches(dw, dw_ref, what="weight gradient")
    assert_matches(db, dy.sum((0, 2, 3)), what="bias gradient")


@pytest.mark.parametrize("split", [1, 3])
def test_two_launches_at_most_written_in_the_weights_layout(split, launched, monkeypatch):
    """dw and db in one launch (one slot) or two (split: the GEMM, then the sum of its
    slots), dw in the weight's memory format and dtype; no torch op does the work."""
    monkeypatch.setattr(weight_grad, "split_reduction",
                        lambda g, sm_count: (split, -(-g.batch * g.out_h * g.out_w // split)))
    x = torch.randn(2, 16, 5, 6, device=DEVICE, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 16, 3, 3, device=DEVICE, dtype=torch.float64)
    weight = weight.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, weight.requires_grad_(), padding=1)
    dy = torch.randn_like(y)
    dw_ref, = torch.autograd.grad(y, weight, dy)
    launched.clear()
    dw, db = kernels.conv2d.conv2d_weight_grad(dy, x, weight.detach(),
                                               geometry_for(x, weight, 1, 1), need_bias=True)
    expected = ["conv2d_weight_grad_kernel"] + ["conv2d_weight_grad_reduce_kernel"] * (split > 1)
    assert launched == expected
    assert dw.dtype == weight.dtype and dw.is_contiguous(memory_format=torch.channels_last)
    assert_matches(dw, dw_ref, what="weight gradient")
    assert_matches(db, dy.sum((0, 2, 3)), what="bias gradient")


def test_autotune_key_has_no_batch_or_image_size():
    keys = set(weight_grad.conv2d_weight_grad_kernel.keys)
    assert not keys & {"N", "H", "W", "OH", "OW", "R_PER_SPLIT", "SPLIT"}, keys
    assert "R_BUCKET" in keys
    # A last partial batch lands in the same bucket as the full ones.
    x = torch.empty(32, 16, 14, 14, device="meta")
    weight = torch.empty(16, 16, 3, 3, device="meta")
    buckets = set()
    for batch in (32, 27):
        xb = x[:batch]
        g = geometry_for(xb, weight, 1, 1)
        dy = torch.empty(g.output_shape, device="meta")
        *_, launches = weight_grad.launch_arguments(dy, xb, weight, g, sm_count=132)
        buckets.add(launches[0][2]["R_BUCKET"])
    assert len(buckets) == 1


@pytest.mark.parametrize("split", [1, 3])
def test_depthwise_two_launches_at_most_written_in_the_weights_layout(split, launched,
                                                                      monkeypatch):
    """The depthwise weight gradient as the implicit GEMM's: its partial slots' launch, then
    (split) the same sum of the slots into dw and db in the weight's format and dtype."""
    depthwise = importlib.import_module("cnn.kernels.conv2d.depthwise")
    monkeypatch.setattr(depthwise, "weight_grad_launch_arguments",
                        functools.partial(depthwise.weight_grad_launch_arguments, split=split))
    x = torch.randn(2, 8, 5, 6, device=DEVICE, dtype=torch.bfloat16)
    weight = torch.randn(16, 1, 3, 3, device=DEVICE, dtype=torch.bfloat16)
    w64 = weight.double().requires_grad_()
    y = F.conv2d(x.double(), w64, padding=1, groups=8)
    dy = torch.randn_like(y).bfloat16()
    dw_ref, = torch.autograd.grad(y, w64, dy.double())
    launched.clear()
    dw, db = depthwise.depthwise_weight_grad(dy, x, weight, geometry_for(x, weight, 1, 1, 1, 8),
                                             need_bias=True)
    expected = ["depthwise_weight_grad_kernel"] \
        + ["conv2d_weight_grad_reduce_kernel"] * (split > 1)
    assert launched == expected
    assert dw.dtype == db.dtype == torch.bfloat16 and dw.shape == weight.shape
    assert_matches(dw.double(), dw_ref.detach(), what="depthwise weight gradient",
                   dtype=torch.bfloat16)
    assert_matches(db.double(), dy.double().sum((0, 2, 3)), what="depthwise bias gradient",
                   dtype=torch.bfloat16)


def test_depthwise_autotune_keys_have_no_batch_or_image_size():
    depthwise = importlib.import_module("cnn.kernels.conv2d.depthwise")
    for kernel in (depthwise.depthwise_forward_kernel, depthwise.depthwise_input_grad_kernel,
                   depthwise.depthwise_weight_grad_kernel):
        keys = set(kernel.keys)
        assert not keys & {"N", "H", "W", "OH", "OW", "R_PER_SPLIT"}, keys
        assert keys & {"P_BUCKET", "R_BUCKET"}

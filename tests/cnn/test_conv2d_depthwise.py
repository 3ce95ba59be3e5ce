"""Depthwise convolutions with epilogues run on the direct depthwise kernels: fused
conv + batch norm + ReLU (training statistics, folded evaluation batch norm) against torch's
unfused layers in float64, the launches each forward takes, and a bias that is a strided view."""
import copy

import pytest
import torch
import torch.nn.functional as F
from cnn.kernels.activation_math import RELU
from support import DEVICE, assert_matches
from torch import nn

import cnn
from cnn import kernels

# (N, C_in, H, W, channel multiplier, kernel, stride, padding, conv bias)
CASES = {
    "depthwise_3x3": (2, 6, 7, 7, 1, 3, 1, 1, False),
    "multiplier2_stride2_bias": (2, 4, 9, 8, 2, 3, 2, 1, True),
}


def make_pair(case):
    n, c, h, w, mult, k, stride, padding, bias = case
    conv = nn.Conv2d(c, c * mult, k, stride, padding, groups=c, bias=bias)
    bn = nn.BatchNorm2d(c * mult)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    fused = cnn.ConvBNReLU2d(copy.deepcopy(conv).to(DEVICE), copy.deepcopy(bn).to(DEVICE),
                             nn.ReLU())
    ref = nn.Sequential(conv, bn, nn.ReLU()).to(DEVICE, torch.float64)
    return fused, ref, (n, c, h, w)


def step(fused, ref, x, what):
    xa, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    y, y_ref = fused(xa), ref(xr)
    grad = torch.randn(y_ref.shape, device=DEVICE, dtype=torch.float64)
    y.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(y, y_ref, torch.float32, f"{what}: output")
    assert_matches(xa.grad, xr.grad, torch.float32, f"{what}: grad_input")
    for (name, p), (_, p_ref) in zip(fused.named_parameters(), ref.named_parameters(),
                                     strict=True):
        assert_matches(p.grad, p_ref.grad, torch.float32, f"{what}: grad of {name}")
        p.grad = p_ref.grad = None
    for (name, b), (_, b_ref) in zip(fused.named_buffers(), ref.named_buffers(), strict=True):
        assert_matches(b.double(), b_ref.double(), torch.float32, f"{what}: {name}")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fused_depthwise_matches_torch_and_runs_the_depthwise_kernel(case, launched):
    fused, ref, shape = make_pair(case)
    x = torch.randn(shape, device=DEVICE)
    step(fused, ref, x, "train")
    assert launched[:3] == ["depthwise_forward_kernel", "batch_norm_finalize_kernel",
                            "batch_norm_normalize_kernel"], launched
    assert "conv2d_forward_kernel" not in launched and "conv2d_weight_grad_kernel" not in launched
    fused.eval()
    ref.eval()
    launched.clear()
    with torch.no_grad():
        assert_matches(fused(x), ref(x.double()), torch.float32, "eval output")
    assert launched == ["depthwise_forward_kernel"], launched
    step(fused, ref, x, "eval")


def test_depthwise_epilogues_through_the_dispatch():
    # cnn.kernels.conv2d.forward with statistics and with folded batch norm + ReLU on a depthwise
    # conv with channel multiplier 3, channels_last input.
    x = torch.randn(2, 5, 6, 7, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(15, 1, 3, 3, device=DEVICE), torch.randn(15, device=DEVICE)
    g = kernels.conv2d.Conv2dGeometry.from_shapes(x.shape, weight.shape, (1, 2), (1, 1, 0, 0),
                                                  (1, 1), 5)
    y_ref = F.conv2d(x.double(), weight.double(), bias.double(), stride=(1, 2), padding=(1, 0),
                     groups=5)
    y, stats = kernels.conv2d.conv2d_forward(x, weight, bias, g, stats=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_matches(y, y_ref, what="output with statistics")
    count, mean, m2 = stats[:, 0], stats[:, 1], stats[:, 2]
    total = count.sum(0)
    mean_all = (count * mean).sum(0) / total
    var = (m2.sum(0) + (count * (mean - mean_all) ** 2).sum(0)) / total
    assert_matches(mean_all, y_ref.mean((0, 2, 3)), what="statistics: mean")
    assert_matches(var, y_ref.var((0, 2, 3), unbiased=False), what="statistics: variance")
    running_mean, running_var = torch.randn(15, device=DEVICE), torch.rand(15, device=DEVICE) + .5
    gamma, beta = torch.randn(15, device=DEVICE), torch.randn(15, device=DEVICE)
    z = kernels.conv2d.conv2d_forward(x, weight, bias, g, activation=RELU,
                                      bn_eval=(running_mean, running_var, gamma, beta, 1e-3))
    z_ref = F.relu(F.batch_norm(y_ref, running_mean.double(), running_var.double(),
                                gamma.double(), beta.double(), eps=1e-3))
    assert_matches(z, z_ref, what="folded batch norm + ReLU")


def test_depthwise_bias_may_be_a_strided_view():
    x = torch.randn(2, 4, 6, 6, device=DEVICE)
    weight = torch.randn(8, 1, 3, 3, device=DEVICE)
    bias = torch.randn(16, device=DEVICE)[::2]
    y = cnn.functional.conv2d(x, weight, bias, padding=1, groups=4)
    assert_matches(y, F.conv2d(x.double(), weight.double(), bias.double(), padding=1, groups=4),
                   what="output")

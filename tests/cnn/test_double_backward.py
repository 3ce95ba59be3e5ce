"""Double backward (create_graph=True, as gradient penalties use): gradgradcheck in float64
for conv2d, the poolings and ReLU, whose backwards are written in our differentiable ops;
batch norm and the fused layer refuse it with torch's error for an op without a derivative.
Tiny shapes: gradgradcheck evaluates the backward many times through the interpreter."""
import pytest
import torch
from support import DEVICE
from torch.autograd import gradgradcheck

import cnn.functional as F


def t(*shape, grad=True):
    return torch.randn(shape, device=DEVICE, dtype=torch.float64, requires_grad=grad)


CASES = {
    "conv2d[stride,padding,bias]": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
                                    (t(1, 2, 3, 3), t(2, 2, 2, 2), t(2))),
    "conv2d[groups]": (lambda x, w: F.conv2d(x, w, groups=2), (t(1, 2, 3, 3), t(2, 1, 2, 2))),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2, 1), (t(1, 2, 3, 3),)),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, 2), (t(1, 1, 3, 3),)),
    "avg_pool2d[ceil_mode,padding]": (
        lambda x: F.avg_pool2d(x, 2, 2, 1, ceil_mode=True, count_include_pad=False),
        (t(1, 2, 3, 3),)),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 2), (t(1, 1, 3, 3),)),
    "relu": (F.relu, (t(2, 3, 3),)),
}


@pytest.mark.parametrize("name", CASES)
def test_gradgradcheck(name):
    fn, inputs = CASES[name]
    if "max_pool" in name or name == "relu":
        # distinct values away from ties and zero, where these are not differentiable
        with torch.no_grad():
            inputs[0].copy_(torch.randperm(inputs[0].numel()).view_as(inputs[0]) / 4 - 1.1)
    # The convolutions' interpreter launches cost ~0.1 s each: their check projects the
    # Jacobians on random vectors (fast_mode) instead of building them column by column.
    assert gradgradcheck(fn, inputs, fast_mode=name.startswith("conv2d"))


def test_gradient_penalty_matches_torch():
    """A gradient penalty through conv, ReLU and max pool equals torch's, second order."""
    x, w = t(1, 1, 4, 4), t(2, 1, 3, 3)
    grads = []
    for conv, relu, pool in ((F.conv2d, F.relu, F.max_pool2d),
                             (torch.nn.functional.conv2d, torch.relu,
                              torch.nn.functional.max_pool2d)):
        y = pool(relu(conv(x, w, padding=1)), 2)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(gx.square().sum(), (x, w)))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("fused", [False, True], ids=["batch_norm", "conv_bn_relu2d"])
def test_batch_norm_double_backward_raises(fused):
    x = t(2, 2, 3, 3)
    weight, bias = t(2), t(2)
    if fused:
        y = F.conv_bn_relu2d(x, t(2, 2, 1, 1), None, None, None, weight, bias, training=True)
    else:
        y = F.batch_norm(x, None, None, weight, bias, training=True)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # first order works
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        gx.sum().backward()

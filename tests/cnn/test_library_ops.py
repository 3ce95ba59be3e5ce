"""torch.library.opcheck for every ``torch.ops.cnn`` op on a grid of samples: the schema
(declared mutations only), the autograd registration, the fake implementation against the
real op (shapes, dtypes, strides) and AOT dispatch with static and dynamic shapes.

Tiny shapes: opcheck runs each op many times, through Triton's interpreter on a CPU."""
import pytest
import torch
from support import DEVICE

import cnn  # noqa: F401  (registers torch.ops.cnn)

CL = torch.channels_last


def t(*shape, dtype=torch.float32, grad=False, layout=torch.contiguous_format):
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    if len(shape) == 4:
        x = x.contiguous(memory_format=layout)
    return x.requires_grad_(grad)


def conv_samples():
    ops = torch.ops.cnn
    yield "conv2d[nchw,bias]", ops.conv2d, (t(2, 3, 5, 5, grad=True), t(4, 3, 3, 3, grad=True),
                                            t(4, grad=True), [1, 1], [1, 1, 1, 1], [1, 1], 1)
    yield "conv2d[channels_last,fp64,groups,stride,asym_pad]", ops.conv2d, (
        t(1, 4, 6, 5, dtype=torch.float64, grad=True, layout=CL),
        t(6, 2, 2, 3, dtype=torch.float64, grad=True), None, [2, 1], [0, 1, 1, 1], [1, 1], 2)
    yield "conv2d[depthwise,dilation]", ops.conv2d, (t(1, 3, 6, 6, grad=True),
                                                     t(3, 1, 3, 3, grad=True), None, [1, 1],
                                                     [2, 2, 2, 2], [2, 2], 3)
    yield "conv2d[empty_batch]", ops.conv2d, (t(0, 2, 4, 4, grad=True), t(3, 2, 3, 3, grad=True),
                                              t(3, grad=True), [1, 1], [0, 0, 0, 0], [1, 1], 1)
    geo = ([2, 2], [1, 1, 1, 1], [1, 1], 1)
    yield "conv2d_input_grad", ops.conv2d_input_grad, (t(2, 4, 3, 3, grad=True),
                                                       t(4, 3, 3, 3, grad=True),
                                                       t(2, 3, 5, 5, layout=CL), *geo)
    yield "conv2d_weight_grad[bias]", ops.conv2d_weight_grad, (t(2, 4, 3, 3, grad=True),
                                                               t(2, 3, 5, 5, grad=True),
                                                               t(4, 3, 3, 3), *geo, True)
    yield "conv2d_weight_grad[no_bias,channels_last_weight]", ops.conv2d_weight_grad, (
        t(2, 4, 3, 3, grad=True), t(2, 3, 5, 5, grad=True), t(4, 3, 3, 3, layout=CL), *geo,
        False)
    # (x, w, b, stride, padding, output_padding, groups, dilation), aten's order
    yield "conv_transpose2d[stride,output_padding,bias]", ops.conv_transpose2d, (
        t(2, 3, 3, 3, grad=True), t(3, 2, 3, 3, grad=True), t(2, grad=True), [2, 2], [1, 1],
        [1, 1], 1, [1, 1])
    yield "conv_transpose2d[channels_last,fp64,groups,dilation]", ops.conv_transpose2d, (
        t(1, 4, 3, 2, dtype=torch.float64, grad=True, layout=CL),
        t(4, 3, 2, 3, dtype=torch.float64, grad=True), None, [1, 2], [0, 1], [1, 0], 2, [2, 1])
    yield "conv_transpose2d[depthwise_like,empty_batch]", ops.conv_transpose2d, (
        t(0, 3, 3, 3, grad=True), t(3, 1, 3, 3, grad=True), t(3, grad=True), [2, 2], [1, 1],
        [0, 0], 3, [1, 1])


def pool_samples():
    ops = torch.ops.cnn
    yield "max_pool2d[ceil_mode,padding]", ops.max_pool2d, (t(2, 3, 5, 5, grad=True), [2, 2],
                                                            [2, 2], [1, 1], [1, 1], True, True)
    yield "max_pool2d[channels_last,dilation,no_indices]", ops.max_pool2d, (
        t(1, 4, 6, 6, layout=CL), [3, 3], [1, 1], [0, 0], [2, 2], False, False)
    yield "max_pool2d[empty_batch]", ops.max_pool2d, (t(0, 2, 4, 4, grad=True), [2, 2], [2, 2],
                                                      [0, 0], [1, 1], False, True)
    yield "adaptive_max_pool2d", ops.adaptive_max_pool2d, (t(2, 3, 5, 7, grad=True), [2, 3], True)
    yield "avg_pool2d[ceil_mode,exclude_pad]", ops.avg_pool2d, (t(2, 3, 5, 5, grad=True), [3, 3],
                                                                [2, 2], [1, 1], True, False, None)
    yield "avg_pool2d[channels_last,divisor,fp64]", ops.avg_pool2d, (
        t(1, 4, 4, 4, dtype=torch.float64, grad=True, layout=CL), [2, 2], [2, 2], [0, 0], False,
        True, 3)
    yield "adaptive_avg_pool2d", ops.adaptive_avg_pool2d, (t(2, 3, 5, 7, grad=True), [3, 2])
    dy = t(2, 3, 2, 2, grad=True)
    idx = torch.randint(0, 16, (2, 3, 2, 2), device=DEVICE)
    yield "max_pool2d_backward", ops.max_pool2d_backward, (dy, idx, [2, 3, 4, 4], False, [2, 2],
                                                           [2, 2], [0, 0], [1, 1], False, False)
    yield "avg_pool2d_backward[adaptive,channels_last]", ops.avg_pool2d_backward, (
        dy, [2, 3, 5, 5], True, [1, 1], [1, 1], [0, 0], False, True, True, None)


def norm_samples():
    ops = torch.ops.cnn
    c = 3
    stats = lambda: (torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE))
    counter = lambda: torch.zeros((), dtype=torch.int64, device=DEVICE)
    # Training is functional (differentiable, so its samples require grad); the running
    # statistics are updated by batch_norm_update_stats, which mutates and has no autograd.
    yield "batch_norm_train[affine]", ops.batch_norm_train, (
        t(2, c, 3, 3, grad=True), t(c, grad=True), t(c, grad=True), 1e-5)
    yield "batch_norm_train[channels_last,no_affine]", ops.batch_norm_train, (
        t(2, c, 3, 3, grad=True, layout=CL), None, None, 1e-5)
    yield "batch_norm_train[2d,weight_only]", ops.batch_norm_train, (
        t(4, c, grad=True), t(c, grad=True), None, 1e-3)
    yield "batch_norm_train[empty_batch]", ops.batch_norm_train, (
        t(0, c, 3, 3, grad=True), t(c, grad=True), t(c, grad=True), 1e-5)
    batch = lambda: (torch.randn(c, device=DEVICE), torch.rand(c, device=DEVICE))
    yield "batch_norm_update_stats[momentum]", ops.batch_norm_update_stats, (
        *stats(), counter(), *batch(), 18, 0.1)
    yield "batch_norm_update_stats[cumulative]", ops.batch_norm_update_stats, (
        *stats(), counter() + 2, *batch(), 18, None)
    yield "batch_norm_update_stats[no_counter]", ops.batch_norm_update_stats, (
        *stats(), None, *batch(), 4, 0.3)
    yield "batch_norm_update_stats[empty_batch,counter_only]", ops.batch_norm_update_stats, (
        *stats(), counter(), *batch(), 0, None)
    yield "batch_norm_eval", ops.batch_norm_eval, (t(2, c, 3, 3, grad=True, layout=CL),
                                                   t(c, grad=True), t(c, grad=True),
                                                   torch.randn(c, device=DEVICE),
                                                   torch.rand(c, device=DEVICE) + 0.5, 1e-5)
    x = t(2, c, 3, 3)
    mean, invstd = x.mean((0, 2, 3)), x.var((0, 2, 3)).add(1e-5).rsqrt()
    yield "batch_norm_backward[training]", ops.batch_norm_backward, (
        t(2, c, 3, 3), x, t(c), t(c), mean, invstd, True, 1e-5, True, True, True)
    yield "batch_norm_backward[eval,weight_only]", ops.batch_norm_backward, (
        t(2, c, 3, 3), x, t(c), None, mean, invstd.square(), False, 1e-5, False, True, False)


def elementwise_samples():
    ops = torch.ops.cnn
    yield "relu[nchw]", ops.relu, (t(2, 3, 4, 4, grad=True),)
    yield "relu[channels_last,fp64]", ops.relu, (t(2, 3, 4, 4, dtype=torch.float64, grad=True,
                                                   layout=CL),)
    yield "relu[strided_1d]", ops.relu, (t(10, grad=True)[::2],)
    yield "relu[5d_non_dense]", ops.relu, (t(2, 3, 2, 4, 4, grad=True)[..., ::2],)
    y = torch.relu(t(2, 3, 4, 4))
    yield "relu_backward", ops.relu_backward, (t(2, 3, 4, 4, grad=True), y)
    # (x, act, slope): act 3 LEAKY_RELU, 4 SILU, 7 GELU_TANH (cnn.kernels.activation_math)
    yield "activation[leaky_relu,channels_last]", ops.activation, (
        t(2, 3, 4, 4, grad=True, layout=CL), 3, 0.2)
    yield "activation[gelu_tanh,fp64,strided]", ops.activation, (
        t(3, 8, dtype=torch.float64, grad=True)[:, ::2], 7, 0.0)
    x = t(2, 3, 4, 4, grad=True)
    yield "activation_backward[silu]", ops.activation_backward, (t(2, 3, 4, 4, grad=True), x, 4,
                                                                 0.0)
    yield "activation_second_grad[silu]", ops.activation_second_grad, (t(2, 3, 4, 4), x.detach(),
                                                                       4, 0.0)


def fused_samples():
    ops = torch.ops.cnn
    c = 4
    geo = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    # Training is functional (differentiable, so its samples require grad); the running
    # statistics are updated by batch_norm_update_stats (norm_samples).
    yield "conv_bn_act2d_train", ops.conv_bn_act2d_train, (
        t(2, 3, 4, 4, grad=True), t(c, 3, 3, 3, grad=True), t(c, grad=True), t(c, grad=True),
        t(c, grad=True), None, *geo, 1e-5, "relu", 0.0)
    yield "conv_bn_act2d_train[silu,channels_last_residual]", ops.conv_bn_act2d_train, (
        t(2, 3, 4, 4, grad=True), t(c, 3, 3, 3, grad=True), t(c), t(c, grad=True),
        t(c, grad=True), t(2, c, 4, 4, grad=True, layout=CL), *geo, 1e-5, "silu", 0.0)
    yield "conv_bn_act2d_train[channels_last,empty_batch]", ops.conv_bn_act2d_train, (
        t(0, 3, 4, 4, grad=True, layout=CL), t(c, 3, 3, 3, grad=True), None, t(c, grad=True),
        t(c, grad=True), None, *geo, 1e-5, "relu", 0.0)
    yield "conv_bn_act2d_eval", ops.conv_bn_act2d_eval, (
        t(2, 3, 4, 4, grad=True, layout=CL), t(c, 3, 3, 3, grad=True), t(c, grad=True),
        t(c, grad=True), t(c, grad=True), torch.randn(c, device=DEVICE),
        torch.rand(c, device=DEVICE) + 0.5, t(2, c, 4, 4, grad=True), *geo, 1e-5,
        "leaky_relu", 0.2)
    x, w = t(2, 3, 4, 4), t(c, 3, 3, 3)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    mean, invstd = y.mean((0, 2, 3)), y.var((0, 2, 3)).add(1e-5).rsqrt()
    yield "conv_bn_act2d_backward[training]", ops.conv_bn_act2d_backward, (
        t(2, c, 4, 4), x, w, t(c), t(c), t(c), mean, invstd, y, t(2, c, 4, 4, layout=CL), *geo,
        1e-5, True, "gelu", 0.0, [True, True, True, True, True, True])
    yield "conv_bn_act2d_backward[eval,input_only]", ops.conv_bn_act2d_backward, (
        t(2, c, 4, 4), x, w, None, t(c), t(c), torch.zeros(c, device=DEVICE),
        torch.ones(c, device=DEVICE), None, None, *geo, 1e-5, False, "relu", 0.0,
        [True, False, False, False, False, False])
    yield "conv_act2d[hardswish,residual,keep_pre]", ops.conv_act2d, (
        t(2, 3, 4, 4, grad=True), t(c, 3, 3, 3, grad=True), t(c, grad=True),
        t(2, c, 4, 4, grad=True, layout=CL), *geo, "hardswish", 0.0, True)
    yield "conv_act2d[relu,channels_last]", ops.conv_act2d, (
        t(2, 3, 4, 4, layout=CL), t(c, 3, 3, 3), None, None, *geo, "relu", 0.0, False)
    yield "conv_act2d_backward", ops.conv_act2d_backward, (
        t(2, c, 4, 4), x, w, t(c), y, t(2, c, 4, 4, layout=CL), *geo, "silu", 0.0,
        [True, True, True, True])


SAMPLES = {name: (op, args) for family in (conv_samples, pool_samples, norm_samples,
                                           elementwise_samples, fused_samples)
           for name, op, args in family()}


@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name):
    op, args = SAMPLES[name]
    torch.library.opcheck(op, args)


def test_every_op_has_samples():
    """A new op in the namespace gets samples here."""
    registered = {name for name in dir(torch.ops.cnn) if not name.startswith("_")
                  and isinstance(getattr(torch.ops.cnn, name), torch._ops.OpOverloadPacket)}
    checked = {str(op).split(".")[1] for op, _ in SAMPLES.values()}  # "cnn.conv2d"
    assert registered == checked

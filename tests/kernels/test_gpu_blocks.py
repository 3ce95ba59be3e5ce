"""Pooling, batch norm, ReLU and the fused layer with the block sizes they use on a GPU.

Under the interpreter these kernels take one large block (the interpreter pays per program),
so here the GPU's sizes are swapped in and the ops run on shapes that leave partial blocks:
several pixel and channel tiles per sample, and more batch-norm partials than one reduction
step merges. Compared with torch's ops in float64, forward and every gradient.
"""
import cnn.kernels.batch_norm.forward as bn_forward
import cnn.kernels.pool2d.geometry as pool_geometry
import cnn.kernels.relu as relu_kernels
import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, assert_matches
from torch import nn

import cnn

# 40 samples x 2 pixel tiles of 256 = 80 statistics partials: two steps of 64 in finalize.
SHAPE = (40, 5, 17, 19)


@pytest.fixture(autouse=True)
def gpu_blocks(monkeypatch):
    monkeypatch.setattr(pool_geometry, "INTERPRET", False)  # launch_block -> GPU_BLOCK
    monkeypatch.setattr(bn_forward, "INTERPRET", False)  # tile_config -> the GPU tiles
    monkeypatch.setattr(bn_forward, "TILE_ELEMENTS", bn_forward.GPU_TILE_ELEMENTS)
    # reduce_launch: the finalize, backward sums and merge launches
    block_t, block_c = bn_forward.GPU_REDUCE_BLOCKS
    monkeypatch.setattr(bn_forward, "REDUCE_BLOCK_T", block_t)
    monkeypatch.setattr(bn_forward, "REDUCE_BLOCK_C", block_c)
    monkeypatch.setattr(relu_kernels, "BLOCK", relu_kernels.GPU_BLOCK)


def make_input(layout, shape=SHAPE):
    x = torch.randn(shape, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def compare(ours, reference, x, params_ours=(), params_ref=()):
    """Forward and gradients of ours(x) against reference(x.double()) in float64."""
    x_ours = x.clone().requires_grad_()
    x_ref = x.double().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    assert_matches(y_ours, y_ref, torch.float32, "forward")
    dy = torch.randn_like(y_ref)
    grads_ours = torch.autograd.grad(y_ours, (x_ours, *params_ours), dy.float())
    grads_ref = torch.autograd.grad(y_ref, (x_ref, *params_ref), dy)
    for i, (g_ours, g_ref) in enumerate(zip(grads_ours, grads_ref, strict=True)):
        assert_matches(g_ours, g_ref, torch.float32, f"gradient {i}")


def test_the_gpu_sizes_are_in_use():
    assert pool_geometry.launch_block(10**6) == pool_geometry.GPU_BLOCK
    assert bn_forward.tile_config(make_input("nchw")) == (256, 8)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pooling(layout):
    x = make_input(layout)
    compare(lambda t: cnn.functional.max_pool2d(t, 3, 2, 1),
            lambda t: F.max_pool2d(t, 3, 2, 1), x)
    compare(lambda t: cnn.functional.avg_pool2d(t, 2, ceil_mode=True),
            lambda t: F.avg_pool2d(t, 2, ceil_mode=True), x)
    compare(lambda t: cnn.functional.adaptive_avg_pool2d(t, (4, 3)),
            lambda t: F.adaptive_avg_pool2d(t, (4, 3)), x)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_relu(layout):
    compare(cnn.functional.relu, F.relu, make_input(layout))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batch_norm_training(layout):
    ours, reference = cnn.BatchNorm2d(5).to(DEVICE), nn.BatchNorm2d(5).to(DEVICE).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    reference.load_state_dict(ours.state_dict())
    compare(ours, reference, make_input(layout) * 3 + 1, (ours.weight, ours.bias),
            (reference.weight, reference.bias))
    assert_matches(ours.running_mean, reference.running_mean, torch.float32, "running mean")
    assert_matches(ours.running_var, reference.running_var, torch.float32, "running var")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_conv_bn_relu_training(layout):
    # No conv bias, as before a batch norm: its gradient is exactly zero there (the batch norm
    # removes the mean), so only rounding would be compared. test_conv2d_gpu_tiles checks the
    # bias gradient of these conv kernels.
    conv = nn.Conv2d(5, 6, 3, padding=1, bias=False).to(DEVICE)
    bn = nn.BatchNorm2d(6).to(DEVICE)
    ours = cnn.ConvBNReLU2d(conv, bn)
    reference = nn.Sequential(nn.Conv2d(5, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                              nn.ReLU())
    reference.load_state_dict(ours.state_dict())
    reference = reference.to(DEVICE).double()
    x = make_input(layout, (12, 5, 17, 19))
    compare(ours, reference, x, (conv.weight, bn.weight, bn.bias),
            (reference[0].weight, reference[1].weight, reference[1].bias))
    assert_matches(bn.running_var, reference[1].running_var, torch.float32, "running var")

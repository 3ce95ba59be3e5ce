"""Every GPU tile config of the convolution kernels, run on small problems whose sizes leave
partial tiles on every axis, against torch.

Under the interpreter the launchers use one large-tile config, so without this test the tile
sizes the GPU autotunes over would never execute before they reach a GPU. Each launcher's own
arguments are launched on the undecorated kernel with the config's tiles forced (the weight
gradient also with its reduction split across several partial slots, as on a GPU).
"""
import importlib

import pytest
import torch
import torch.nn.functional as F
from cnn.kernels.activation_math import RELU
from cnn.kernels.batch_norm.forward import batch_norm_finalize
from cnn.kernels.conv2d.configs import IMPLICIT_GEMM_TILES_GPU
from cnn.kernels.conv2d.depthwise import DEPTHWISE_TILES_GPU
from cnn.kernels.conv2d.geometry import Conv2dGeometry
from cnn.kernels.conv2d.weight_grad import FP32_IEEE_TILES, WGRAD_TILES_GPU
from cnn.kernels.runtime import cdiv
from support import DEVICE, assert_matches
from triton.runtime.autotuner import Autotuner, Heuristics

forward = importlib.import_module("cnn.kernels.conv2d.forward")
input_grad = importlib.import_module("cnn.kernels.conv2d.input_grad")
weight_grad = importlib.import_module("cnn.kernels.conv2d.weight_grad")
depthwise = importlib.import_module("cnn.kernels.conv2d.depthwise")

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups): K = 9*20 = 180 and
# M = 2*5*5 = 50 leave partial tiles for every BLOCK_K and BLOCK_M; 24 output channels a
# partial BLOCK_N. The second adds groups, dilation and a stride that splits dx into phases.
PROBLEMS = {
    "3x3s2": (2, 20, 9, 9, 24, 3, 2, 1, 1, 1),
    "groups2_dil2": (2, 36, 8, 7, 40, 3, (2, 1), (2, 1), (2, 1), 2),
}


def innermost(kernel):
    """The undecorated kernel under @autotune/@heuristics: tiles can then be forced."""
    while isinstance(kernel, (Autotuner, Heuristics)):
        kernel = kernel.fn
    return kernel


def tiles_id(cfg):
    bm, bn, bk, warps, stages = cfg
    return f"M{bm}N{bn}K{bk}w{warps}"


def make(problem, layout):
    n, c_in, h, w, c_out, k, stride, padding, dilation, groups = problem
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    x = torch.randn(n, c_in, h, w, device=DEVICE)
    weight = torch.randn(c_out, c_in // groups, k, k, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    geometry = Conv2dGeometry.from_shapes(x.shape, weight.shape, stride,
                                          (padding[0], padding[0], padding[1], padding[1]),
                                          dilation, groups)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, weight, geometry, options


def launch(kernel, grid, args, cfg):
    bm, bn, bk, warps, stages = cfg
    innermost(kernel)[grid](**args, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
                            num_stages=stages)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("cfg", IMPLICIT_GEMM_TILES_GPU, ids=tiles_id)
def test_implicit_gemm_tiles(cfg, problem, layout):
    x, weight, g, options = make(PROBLEMS[problem], layout)
    bias = torch.randn(g.out_channels, device=DEVICE)
    x64, w64, b64 = x.double(), weight.double(), bias.double()
    y_ref = F.conv2d(x64, w64, b64, **options)

    y, _, grid, args = forward.launch_arguments(x, weight, bias, g, activation=RELU)
    launch(forward.conv2d_forward_kernel, grid, args, cfg)
    assert_matches(y, y_ref.relu(), what="forward + bias + relu")

    dy = torch.randn_like(y_ref).float()
    dx_ref, dw_ref = torch.autograd.grad(F.conv2d(x64.requires_grad_(), w64.requires_grad_(),
                                                  **options), (x64, w64), dy.double())
    dx, grid, args = input_grad.launch_arguments(dy, weight, x, g)
    launch(input_grad.conv2d_input_grad_kernel, grid, args, cfg)
    assert_matches(dx, dx_ref, what="input gradient")


# Weight-gradient problems: the two above (tap-major: >= 16 input channels per group) and a
# 3-channel stem (flattened (kh, kw, ci) columns); 2*5*5 = 50 or 2*4*7 = 56 reduction rows, so
# every BLOCK_K and each of the 3 partial slots ends in a partial tile.
# long_rows: R = 2*12*12 = 288, so each of the 3 partial slots (96 rows) has full unmasked
# steps and then a partial one for BLOCK_K 64, only full ones for 32 (the row-table loop's
# read ahead reaches past its last row); padding 2 with dilation 2 leaves border rows with no
# tap inside. flat_long and flat_groups: the flattened columns' row-table loop (one input
# channel and a 5x5 kernel; 2 channels per group with dilation), with full steps too.
# stem7x7: 49 taps, so the flattened columns read both tap-bit words of the row table;
# tap_major_7x7 the same for one tap per program. carried_9x9 and carried_flat_9x9: 81 taps,
# more than the table's bits, so the reduction rows are carried by adds and compares instead.
WGRAD_PROBLEMS = dict(PROBLEMS, stem3=(2, 3, 9, 9, 24, 3, 2, 1, 1, 1),
                      long_rows=(2, 16, 12, 12, 16, 3, 1, 2, 2, 1),
                      flat_long=(2, 1, 12, 12, 8, 5, 1, 2, 1, 1),
                      flat_groups=(2, 6, 11, 10, 12, 3, 1, 2, 2, 3),
                      stem7x7=(2, 3, 13, 12, 8, 7, 2, 3, 1, 1),
                      tap_major_7x7=(1, 16, 9, 9, 16, 7, 1, 3, 1, 1),
                      carried_9x9=(1, 16, 10, 9, 8, 9, 1, 4, 1, 1),
                      carried_flat_9x9=(2, 2, 10, 9, 8, 9, 2, 4, 1, 1))


def wgrad_tiles_id(cfg):
    return tiles_id(cfg) + f"s{cfg[4]}"


@pytest.mark.parametrize("problem", list(WGRAD_PROBLEMS))
@pytest.mark.parametrize("cfg", WGRAD_TILES_GPU + [t for t in FP32_IEEE_TILES
                                                  if t not in WGRAD_TILES_GPU],
                         ids=wgrad_tiles_id)
def test_weight_grad_tiles(cfg, problem):
    """The weight gradient as on a GPU: the reduction over N*OH*OW split into 3 partial slots,
    then the second launch sums them into dw and db in the weight's layout and dtype. One
    layout: the launcher hands the kernel channels_last operands whatever the caller's."""
    x, weight, g, options = make(WGRAD_PROBLEMS[problem], "nchw")
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y_ref = F.conv2d(x64, w64, **options)
    dy = torch.randn_like(y_ref).float()
    dw_ref, = torch.autograd.grad(y_ref, (w64,), dy.double())
    grad_weight, grad_bias, launches = weight_grad.launch_arguments(dy, x, weight, g,
                                                                    need_bias=True, split=3)
    (gemm, grid, args), (reduce, reduce_grid, reduce_args) = launches
    launch(gemm, grid, args, cfg)
    reduce[reduce_grid](**reduce_args)
    assert_matches(grad_weight, dw_ref, what="weight gradient")
    assert_matches(grad_bias, dy.double().sum((0, 2, 3)), what="bias gradient")


# The K-loop structures of the forward and input gradient, each under a tile whose BLOCK_K is
# wider than the channel block (64, clamped) and one that is not (32); in NCHW the second also
# stores its 64 columns half by half where the plane gives no row vectors:
# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups).
LOOP_PROBLEMS = {
    # 48 channels: three 16-channel blocks per tap and no channel mask (EVEN_C), in both
    # kernels; padding leaves the border taps' rows and columns partly outside the input.
    "tap_major_48ch": (2, 48, 5, 6, 16, 3, 1, 1, 1, 1),
    # 32 channels, stride (2, 3) and dilation (1, 2): dx phases of one or two taps per axis.
    "tap_major_32ch_phases": (2, 32, 7, 9, 32, 3, (2, 3), 1, (1, 2), 1),
    # Padding 3 around a 3x3 kernel: the border rows of the output have no tap inside the
    # input at all (an empty tap range), the next ones only some.
    "tap_major_wide_padding": (1, 16, 4, 5, 16, 3, 1, 3, 1, 1),
    # A 1x1 stride-2 downsample: one tap, every output pixel inside.
    "pointwise_stride2": (2, 32, 6, 7, 16, 1, 2, 0, 1, 1),
    # 4x8 planes and 3 images: an NCHW y and dx are stored by 4-pixel vectors (fp32), and the
    # last row tile ends inside a plane (cnn.kernels.conv2d.tile_store); 24 channels, a partial
    # BLOCK_N.
    "nchw_row_vectors": (3, 16, 4, 8, 24, 3, 1, 1, 1, 1),
    # RGB and 4-channel first layers: the forward reads whole 4-channel pixels (3 channels
    # padded), with a 7x7/2 stem, a dilated 3x3 and a 1x1 (K = 4, so BLOCK_K narrows to 16
    # below).
    "packed_rgb_7x7s2": (2, 3, 9, 8, 24, 7, 2, 3, 1, 1),
    "packed_4ch_dilated": (2, 4, 7, 9, 12, 3, 1, 2, 2, 1),
    "packed_rgb_1x1": (2, 3, 5, 5, 8, 1, 1, 0, 1, 1),
    # 2 input and 4 output channels per group: both kernels' flattened-K tables, with groups,
    # dilation and stride phases.
    "flattened_groups3": (2, 6, 9, 8, 12, 3, 2, 1, 2, 3),
}
LOOP_TILES = [(64, 32, 64, 4, 3), (128, 64, 32, 4, 4), (64, 32, 16, 4, 3)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("problem", list(LOOP_PROBLEMS))
@pytest.mark.parametrize("cfg", LOOP_TILES, ids=tiles_id)
def test_implicit_gemm_loop_structures(cfg, problem, layout):
    x, weight, g, options = make(LOOP_PROBLEMS[problem], layout)
    if layout == "channels_last":  # the launchers then read both as given, without a copy
        weight = weight.contiguous(memory_format=torch.channels_last)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y_ref = F.conv2d(x64, w64, **options)
    y, _, grid, args = forward.launch_arguments(x, weight, None, g)
    launch(forward.conv2d_forward_kernel, grid, args, cfg)
    assert_matches(y, y_ref.detach(), what="forward")

    dy = torch.randn_like(y_ref).float()
    (dx_ref,) = torch.autograd.grad(y_ref, (x64,), dy.double())
    dx, grid, args = input_grad.launch_arguments(dy, weight, x, g)
    launch(input_grad.conv2d_input_grad_kernel, grid, args, cfg)
    assert_matches(dx, dx_ref, what="input gradient")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("tiles", DEPTHWISE_TILES_GPU, ids=lambda t: f"P{t[0]}C{t[1]}w{t[2]}")
def test_depthwise_tiles(tiles, layout):
    # 40 channels (multiplier 2 over 20 inputs) and 2*5*4 = 40 output pixels: partial tiles.
    n, c, h, w, mult = 2, 20, 9, 7, 2
    x = torch.randn(n, c, h, w, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c * mult, 1, 3, 3, device=DEVICE)
    bias = torch.randn(c * mult, device=DEVICE)
    g = Conv2dGeometry.from_shapes(x.shape, weight.shape, (2, 2), (1, 1, 1, 1), (1, 1), c)
    options = dict(stride=2, padding=1, groups=c)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y_ref = F.conv2d(x64, w64, bias.double(), **options)
    dy = torch.randn_like(y_ref).float()
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x64, w64), dy.double())
    pixels, block_c, warps = tiles

    y, _, grid, args = depthwise.forward_launch_arguments(x, weight, bias, g)
    innermost(depthwise.depthwise_forward_kernel)[grid](**args, BLOCK_P=pixels, BLOCK_C=block_c,
                                                         num_warps=warps)
    assert_matches(y, y_ref.detach(), what="depthwise forward")

    # The epilogues: statistics (one row per pixel tile, here of this config's size), then
    # folded eval batch norm + ReLU.
    y, _, grid, args = depthwise.forward_launch_arguments(x, weight, bias, g, stats=True)
    stats = torch.empty((cdiv(g.batch * g.out_h * g.out_w, pixels), 3, g.out_channels),
                        device=DEVICE)
    innermost(depthwise.depthwise_forward_kernel)[grid](**dict(args, stats_ptr=stats),
                                                         BLOCK_P=pixels, BLOCK_C=block_c,
                                                         num_warps=warps)
    mean, invstd = batch_norm_finalize(stats, eps=1e-5)
    assert_matches(y, y_ref.detach(), what="depthwise forward (statistics epilogue)")
    assert_matches(mean, y_ref.detach().mean((0, 2, 3)), what="statistics: mean")
    assert_matches(invstd, (y_ref.detach().var((0, 2, 3), unbiased=False) + 1e-5).rsqrt(),
                   what="statistics: invstd")
    running_mean, running_var = torch.randn(c * mult), torch.rand(c * mult) + 0.5
    gamma, beta = torch.randn(c * mult), torch.randn(c * mult)
    bn_eval = tuple(t.to(DEVICE) for t in (running_mean, running_var, gamma, beta)) + (1e-5,)
    y, _, grid, args = depthwise.forward_launch_arguments(x, weight, bias, g, activation=RELU,
                                                          bn_eval=bn_eval)
    innermost(depthwise.depthwise_forward_kernel)[grid](**args, BLOCK_P=pixels, BLOCK_C=block_c,
                                                         num_warps=warps)
    z_ref = F.relu(F.batch_norm(y_ref.detach(), running_mean.double(), running_var.double(),
                                gamma.double(), beta.double(), training=False, eps=1e-5))
    assert_matches(y, z_ref, what="depthwise forward (eval batch norm + ReLU epilogue)")

    dx, grid, args = depthwise.input_grad_launch_arguments(dy, weight, x, g)
    innermost(depthwise.depthwise_input_grad_kernel)[grid](**args, BLOCK_P=pixels,
                                                            BLOCK_C=block_c, num_warps=warps)
    assert_matches(dx, dx_ref, what="depthwise input gradient")

    # As on a GPU: 3 partial slots, then the implicit GEMM's sum of them into dw and db.
    grad_weight, grad_bias, launches = depthwise.weight_grad_launch_arguments(
        dy, x, weight, g, need_bias=True, split=3)
    (_, _, args), (reduce, reduce_grid, reduce_args) = launches
    grid = (cdiv(g.out_channels, block_c), 9, 3)
    innermost(depthwise.depthwise_weight_grad_kernel)[grid](**args, BLOCK_R=pixels,
                                                             BLOCK_C=block_c, num_warps=warps)
    reduce[reduce_grid](**reduce_args)
    assert_matches(grad_weight, dw_ref, what="depthwise weight gradient")
    assert_matches(grad_bias, dy.double().sum((0, 2, 3)), what="depthwise bias gradient")


@pytest.mark.parametrize("problem", ["3x3s2", "tap_major_48ch", "flat_long", "flattened_groups3"])
def test_input_grad_tf32_weight_layout(problem, monkeypatch):
    """Under TF32 the input gradient reads the weight with C_out innermost (groups of 1; a
    grouped weight keeps channels_last): the same result from either layout. The interpreter
    computes the dot in fp32 whatever the precision, so only the layout changes here."""
    monkeypatch.setattr(input_grad, "dot_precision", lambda dtype: "tf32")
    problems = dict(WGRAD_PROBLEMS, **LOOP_PROBLEMS)
    x, weight, g, options = make(problems[problem], "nchw")
    x64, w64 = x.double().requires_grad_(), weight.double()
    y_ref = F.conv2d(x64, w64, **options)
    dy = torch.randn_like(y_ref).float()
    (dx_ref,) = torch.autograd.grad(y_ref, (x64,), dy.double())
    dx, grid, args = input_grad.launch_arguments(dy, weight, x, g)
    assert (args["swo"] == 1) == (g.groups == 1)
    launch(input_grad.conv2d_input_grad_kernel, grid, args, (64, 32, 32, 4, 3))
    assert_matches(dx, dx_ref, what="input gradient, TF32 weight layout")

"""Batch norm forward over (N, C, H, W): statistics, finalize, normalize (+ residual, activation).

Per channel c, over the M = N*H*W values x[:, c, :, :]:
    mean = sum x / M,      var = sum (x - mean)^2 / M           (biased: it normalises)
    invstd = 1 / sqrt(var + eps),   xhat = (x - mean) * invstd
    y = gamma * xhat + beta          (gamma, beta optional; a fused block then gives
                                      act(y + residual), ``cnn.kernels.activation_math``)
    running_mean <- (1 - f) * running_mean + f * mean
    running_var  <- (1 - f) * running_var  + f * sum (x - mean)^2 / (M - 1)   (unbiased)
    f = momentum, or 1 / num_batches_tracked (a cumulative average) when momentum is None.

Three kernels, three launches in training (running.py holds the running-statistics update):
  stats      each (pixels x channels) tile writes its own count, mean and M2 (sum of squared
             deviations from the tile's mean) per channel into partials (tiles, 3, C): the
             layout conv2d_forward's STATS epilogue writes, so fused conv + BN shares the rest.
  finalize   one program per channel block merges the partials with Chan's parallel formula
             (``cnn.kernels.batch_norm.statistics``), writes mean and invstd (and, if asked,
             the unbiased variance), updates running stats (``cnn.kernels.batch_norm.running``).
  normalize  y = act((x - mean) * invstd * gamma + beta + residual); in evaluation it reads the
             running stats directly (FROM_VAR), so evaluation is this one launch. It also
             advances num_batches_tracked (program 0), after finalize has read it.
Statistics are fp32 (fp64 for fp64 input); x and y keep their dtype and any strides.
"""
import math

import torch
import triton
import triton.language as tl

from ..activation_math import NONE, activate
from ..activation_slope import joined_slope, slope_parts
from ..direct_launch import plan_launch
from ..host_cache import host_cached
from ..runtime import INTERPRET, accumulator_dtype, cdiv, next_power_of_2
from .running import momentum_factor, running_update
from .statistics import channel_block, merge_partials, write_partial

# Elements per (pixels x channels) tile: the interpreter pays per program, so big tiles there;
# on a GPU 2048 (16 a thread at 4 warps) keeps the three 64-bit pointer tiles of the backward
# kernels within the register file (4096 spilled in fp64).
GPU_TILE_ELEMENTS = 2048
TILE_ELEMENTS = 65536 if INTERPRET else GPU_TILE_ELEMENTS
GPU_WARPS = 4
# Partials merged per step in finalize-like reductions: (tiles, channels).
GPU_REDUCE_BLOCKS = (64, 32)
REDUCE_BLOCK_T, REDUCE_BLOCK_C = (1024, 64) if INTERPRET else GPU_REDUCE_BLOCKS


@triton.jit
def tile_offsets(pid, n_stride, c_stride, h_stride, w_stride, pid_c, HW, W, C,
                 HW_FLAT: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """Offsets (int64, [BLOCK_HW, BLOCK_C]) of tile (pid, pid_c) of a (N, C, H, W) tensor, and
    its pixel and channel masks: pid runs over N * cdiv(HW, BLOCK_HW) pixel blocks, pid_c over
    channel blocks.
    HW_FLAT: h and w merge into one axis of stride w_stride (NCHW and NHWC both do), so
    the pixel offsets stay provably contiguous where the stride is 1."""
    hw_blocks = tl.cdiv(HW, BLOCK_HW)
    n = pid // hw_blocks
    hw = (pid % hw_blocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if HW_FLAT:
        pix = hw.to(tl.int64) * w_stride
    else:
        pix = (hw // W).to(tl.int64) * h_stride + (hw % W).to(tl.int64) * w_stride
    offs = n.to(tl.int64) * n_stride + pix[:, None] + c.to(tl.int64)[None, :] * c_stride
    return offs, hw < HW, c < C


@triton.jit
def channel_affine(mean_ptr, scale_ptr, weight_ptr, bias_ptr, c, mask_c, eps,
                   FROM_VAR: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                   ACC_DTYPE: tl.constexpr):
    """Per-channel (mean, invstd, a, b) with y = (x - mean) * a + b, a = invstd * gamma.
    scale_ptr holds invstd, or the variance when FROM_VAR (evaluation, running stats)."""
    mean = tl.load(mean_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
    if FROM_VAR:
        var = tl.load(scale_ptr + c, mask=mask_c, other=1.0).to(ACC_DTYPE)
        invstd = 1.0 / tl.sqrt(var + eps)
    else:
        invstd = tl.load(scale_ptr + c, mask=mask_c, other=1.0).to(ACC_DTYPE)
    a = invstd
    if HAS_WEIGHT:
        a = a * tl.load(weight_ptr + c, mask=mask_c, other=1.0).to(ACC_DTYPE)
    b = tl.zeros_like(mean)
    if HAS_BIAS:
        b = tl.load(bias_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
    return mean, invstd, a, b


@triton.jit
def normalized(x, mean, a, b):
    """y = (x - mean) * a + b of a (pixels x channels) tile, per channel."""
    return (x - mean[None, :]) * a[None, :] + b[None, :]


@triton.jit
def batch_norm_stats_kernel(
    # pointers
    x_ptr, stats_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    # sizes
    N, C, H, W,
    # meta-parameters
    HW_FLAT: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """stats[tile, {count, mean, M2}, c] of one (pixels x channels) tile."""
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    HW = H * W
    offs, mask_hw, mask_c = tile_offsets(pid, sxn, sxc, sxh, sxw, pid_c, HW, W, C,
                                         HW_FLAT, BLOCK_HW, BLOCK_C)
    mask = mask_hw[:, None] & mask_c[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    c, _ = channel_block(pid_c, C, BLOCK_C)
    write_partial(stats_ptr, pid, x, mask, mask_hw, c, mask_c, C)


@triton.jit
def batch_norm_finalize_kernel(
    # pointers
    stats_ptr, mean_ptr, invstd_ptr, var_ptr, running_mean_ptr, running_var_ptr, nbt_ptr,
    # sizes and scalars
    T, C, eps, momentum,
    # meta-parameters
    WRITE_VAR: tl.constexpr, UPDATE_RUNNING: tl.constexpr, CUMULATIVE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Merge stats (T, 3, C) into mean, invstd (C,) (``merge_partials``); write the unbiased
    variance (WRITE_VAR); update the running stats (``running_update``)."""
    c, mask_c = channel_block(tl.program_id(0), C, BLOCK_C)
    n_acc, mean_acc, m2_acc = merge_partials(stats_ptr, T, C, c, mask_c, ACC_DTYPE, BLOCK_T,
                                             BLOCK_C)
    invstd = 1.0 / tl.sqrt(m2_acc / tl.maximum(n_acc, 1.0) + eps)
    tl.store(mean_ptr + c, mean_acc, mask=mask_c)
    tl.store(invstd_ptr + c, invstd, mask=mask_c)
    unbiased = m2_acc / tl.maximum(n_acc - 1.0, 1.0)  # M > 1: checked by the caller
    if WRITE_VAR:
        tl.store(var_ptr + c, unbiased, mask=mask_c)
    if UPDATE_RUNNING:
        # num_batches_tracked is advanced by the normalize launch, after this one.
        f = momentum_factor(nbt_ptr, momentum, CUMULATIVE, ACC_DTYPE, BLOCK_C)
        running_update(running_mean_ptr, running_var_ptr, c, mask_c, mean_acc, unbiased, f,
                       ACC_DTYPE)


@triton.jit
def batch_norm_normalize_kernel(
    # pointers
    x_ptr, y_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr, nbt_ptr, res_ptr,
    # strides
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    # sizes and scalars
    N, C, H, W, eps, slope_hi, slope_lo,
    # meta-parameters
    FROM_VAR: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, ACT: tl.constexpr, COUNT_BATCH: tl.constexpr,
    HW_FLAT: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = act((x - mean) * invstd * gamma + beta + residual); y and the residual may have
    other strides than x."""
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    c, mask_c = channel_block(pid_c, C, BLOCK_C)
    mean, _, a, b = channel_affine(mean_ptr, scale_ptr, weight_ptr, bias_ptr, c, mask_c, eps,
                                   FROM_VAR, HAS_WEIGHT, HAS_BIAS, ACC_DTYPE)
    x_offs, mask_hw, _ = tile_offsets(pid, sxn, sxc, sxh, sxw, pid_c, H * W, W, C,
                                      HW_FLAT, BLOCK_HW, BLOCK_C)
    y_offs, _, _ = tile_offsets(pid, syn, syc, syh, syw, pid_c, H * W, W, C,
                                HW_FLAT, BLOCK_HW, BLOCK_C)
    mask = mask_hw[:, None] & mask_c[None, :]
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    y = normalized(x, mean, a, b)
    if HAS_RESIDUAL:
        r_offs, _, _ = tile_offsets(pid, srn, src, srh, srw, pid_c, H * W, W, C,
                                    HW_FLAT, BLOCK_HW, BLOCK_C)
        y += tl.load(res_ptr + r_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    y = activate(y, joined_slope(slope_hi, slope_lo, ACC_DTYPE), ACT)
    tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if COUNT_BATCH:
        if (pid == 0) & (pid_c == 0):
            tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)


# ----------------------------------------------------------------------------- launchers

def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are fp32, or fp64 for fp64 input."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spatial_strides(t: torch.Tensor):
    """(h_stride, w_stride, flat) of a (N, C, H, W) tensor; flat when h and w merge into one
    axis of stride w_stride (then w_stride is that stride)."""
    _, _, h, w = t.shape
    sh, sw = t.stride(2), t.stride(3)
    if w == 1:
        return sh, sh, True
    if h == 1 or sh == w * sw:
        return sh, sw, True
    return sh, sw, False


def tile_config(t: torch.Tensor):
    """(BLOCK_HW, BLOCK_C) for a (N, C, H, W) tensor: pixels along the contiguous axis of
    NCHW, channels along it for channels_last; TILE_ELEMENTS a tile."""
    _, c, h, w = t.shape
    hw_p2, c_p2 = next_power_of_2(h * w), next_power_of_2(c)
    if INTERPRET:
        block_c = min(c_p2, 64)
        return min(hw_p2, max(16, TILE_ELEMENTS // block_c)), block_c
    if t.stride(1) == 1 and c > 1:
        block_c = min(c_p2, 64)
        return min(hw_p2, TILE_ELEMENTS // block_c), block_c
    block_hw = min(hw_p2, 256)
    return block_hw, min(c_p2, TILE_ELEMENTS // block_hw)


def tile_launch(x: torch.Tensor, *tensors: torch.Tensor):
    """(grid, strides, options) of a launch over the (pixels x channels) tiles of x (N, C, H, W)
    (``tile_config``) that reads or writes ``tensors`` of x's shape, any strides each: strides
    lists each tensor's (n, c, h, w) strides in turn (h and w as ``spatial_strides`` gives
    them), options the HW_FLAT (every tensor's h and w merge), BLOCK_HW, BLOCK_C and num_warps
    launch arguments. grid[0] is the number of pixel tiles. Planned once per signature."""
    return tile_plan(x.shape, x.stride(1), tuple([t.stride() for t in tensors]), knobs())


def knobs() -> tuple:
    """The module settings the plans read (tests swap in the GPU's): part of every key."""
    return INTERPRET, TILE_ELEMENTS, REDUCE_BLOCK_T, REDUCE_BLOCK_C


@host_cached()
def tile_plan(shape: tuple, channel_stride: int, tensor_strides: tuple, knobs: tuple):
    """``tile_launch`` of an x of this shape and channel stride over tensors of these
    strides (a function of the signature and the ``knobs`` alone, so cached)."""
    n, c, h, w = shape
    x = torch.empty_strided(shape, (0, channel_stride, 0, 0), device="meta")
    block_hw, block_c = tile_config(x)
    strides, flat = [], True
    for t_strides in tensor_strides:
        sh, sw, t_flat = spatial_strides(torch.empty_strided(shape, t_strides, device="meta"))
        strides += [t_strides[0], t_strides[1], sh, sw]
        flat = flat and t_flat
    grid = (n * cdiv(h * w, block_hw), cdiv(c, block_c))
    return grid, tuple(strides), dict(HW_FLAT=flat, BLOCK_HW=block_hw, BLOCK_C=block_c,
                                      num_warps=GPU_WARPS)


def reduce_launch(tiles: int, channels: int):
    """(grid, options) of a launch that reduces partials (tiles, rows, channels) over the tiles:
    one program per REDUCE_BLOCK_C channels, REDUCE_BLOCK_T partials a step; options are the
    BLOCK_T, BLOCK_C and num_warps launch arguments."""
    return reduce_plan(tiles, channels, knobs())


@host_cached()
def reduce_plan(tiles: int, channels: int, knobs: tuple):
    """``reduce_launch`` (a function of its arguments and the ``knobs`` alone, so cached)."""
    block_c = min(REDUCE_BLOCK_C, next_power_of_2(channels))
    block_t = min(REDUCE_BLOCK_T, next_power_of_2(tiles))
    return (cdiv(channels, block_c),), dict(BLOCK_T=block_t, BLOCK_C=block_c,
                                            num_warps=GPU_WARPS)


ZERO_SLOPE = slope_parts(0.0)


def launch_slope(negative_slope: float) -> tuple[float, float]:
    """``slope_parts``, without its numpy round trip for the usual +0.0 (no LEAKY_RELU)."""
    if negative_slope == 0.0 and math.copysign(1.0, negative_slope) > 0:
        return ZERO_SLOPE
    return slope_parts(negative_slope)


def batch_norm_stats(x: torch.Tensor) -> torch.Tensor:
    """Partial statistics of x (N, C, H, W), any strides: (tiles, 3, C) of (count, mean, M2),
    fp32 (fp64 for fp64). x must not be empty."""
    n, c, h, w = x.shape
    grid, strides, options = tile_launch(x, x)
    stats = torch.empty((grid[0], 3, c), device=x.device, dtype=stats_dtype(x.dtype))
    batch_norm_stats_kernel.run(x, stats, *strides, n, c, h, w,
                                ACC_DTYPE=accumulator_dtype(x.dtype), grid=grid, warmup=False,
                                **options)
    return stats


def batch_norm_finalize(stats: torch.Tensor, running_mean=None, running_var=None,
                        num_batches_tracked=None, momentum=0.1, eps: float = 1e-5, *,
                        var_out=None):
    """mean, invstd: (C,) in the stats' dtype, from partials (tiles, 3, C).

    running_mean, running_var (C,) or None: updated in place with factor ``momentum``, or,
    when momentum is None, 1 / (num_batches_tracked + 1) (the caller's normalize launch then
    advances num_batches_tracked, a 0-dim int64 tensor). var_out (C,) in the stats' dtype, or
    None: receives the unbiased batch variance (what ``batch_norm_update_stats`` takes)."""
    tiles, _, c = stats.shape
    mean = torch.empty((c,), device=stats.device, dtype=stats.dtype)
    invstd = torch.empty_like(mean)
    update = running_mean is not None
    cumulative = update and momentum is None
    if cumulative and num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    grid, options = reduce_launch(tiles, c)
    batch_norm_finalize_kernel.run(
        stats, mean, invstd, var_out if var_out is not None else mean,
        running_mean if update else mean, running_var if update else mean,
        num_batches_tracked if cumulative else mean,
        tiles, c, float(eps), float(momentum or 0.0),
        WRITE_VAR=var_out is not None, UPDATE_RUNNING=update, CUMULATIVE=cumulative,
        ACC_DTYPE=accumulator_dtype(stats.dtype), grid=grid, warmup=False, **options,
    )
    return mean, invstd


def batch_norm_normalize(x: torch.Tensor, out: torch.Tensor, mean: torch.Tensor,
                         scale: torch.Tensor, weight=None, bias=None, *, eps: float = 0.0,
                         from_var: bool = False, activation: int = NONE,
                         negative_slope: float = 0.0, residual=None,
                         num_batches_tracked=None) -> torch.Tensor:
    """out (N, C, H, W) = act((x - mean) * invstd * weight + bias + residual), written in
    place.

    x, out, residual (or None): (N, C, H, W), any strides each; mean, scale, weight, bias:
    (C,). scale is invstd, or the variance (with eps) when from_var. activation: an ACT code
    of ``cnn.kernels.activation_math`` (negative_slope: LEAKY_RELU's). num_batches_tracked:
    0-dim int64 tensor to advance by one, or None."""
    n, c, h, w = x.shape
    if x.numel() == 0:
        return out
    has_residual = residual is not None
    grid, strides, options = tile_launch(x, x, out, residual if has_residual else out)
    batch_norm_normalize_kernel.run(
        x, out, mean, scale,
        weight if weight is not None else mean, bias if bias is not None else mean,
        num_batches_tracked if num_batches_tracked is not None else mean,
        residual if has_residual else out,
        *strides, n, c, h, w, float(eps), *launch_slope(negative_slope),
        FROM_VAR=from_var, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        HAS_RESIDUAL=has_residual, ACT=activation,
        COUNT_BATCH=num_batches_tracked is not None,
        ACC_DTYPE=accumulator_dtype(x.dtype), grid=grid, warmup=False, **options,
    )
    return out


@host_cached()
def train_forward_plan(shape: torch.Size, x_strides: tuple, out_strides: tuple, knobs: tuple):
    """The three launches of ``batch_norm_train_forward`` over an x and out of this shape and
    these strides: (stats launch, finalize launch, normalize launch) as ``tile_plan`` and
    ``reduce_plan`` give them."""
    stats = tile_plan(shape, x_strides[1], (x_strides,), knobs)
    normalize = tile_plan(shape, x_strides[1], (x_strides, out_strides, out_strides), knobs)
    return stats, reduce_plan(stats[0][0], shape[1], knobs), normalize


@host_cached()
def train_forward_launches(shape: torch.Size, x_strides: tuple, out_strides: tuple,
                           dtype: torch.dtype, has_weight: bool, has_bias: bool, update: bool,
                           cumulative: bool, count_batch: bool, write_var: bool, eps: float,
                           momentum: float | None, knobs: tuple):
    """``train_forward_plan`` with every launch's arguments but the tensors fixed for these
    flags and scalars: (partials' numel, the partials' dtype or None when it is x's, then
    the stats, finalize and normalize Launches, each called with its tensors)."""
    (s_grid, s_strides, s_options), (f_grid, f_options), (n_grid, n_strides, n_options) = \
        train_forward_plan(shape, x_strides, out_strides, knobs)
    acc = accumulator_dtype(dtype)
    stats = dict(ACC_DTYPE=acc, grid=s_grid, warmup=False, **s_options)
    finalize = dict(WRITE_VAR=write_var, UPDATE_RUNNING=update, CUMULATIVE=cumulative,
                    ACC_DTYPE=acc, grid=f_grid, warmup=False, **f_options)
    normalize = dict(FROM_VAR=False, HAS_WEIGHT=has_weight, HAS_BIAS=has_bias,
                     HAS_RESIDUAL=False, ACT=NONE, COUNT_BATCH=count_batch, ACC_DTYPE=acc,
                     grid=n_grid, warmup=False, **n_options)
    partials = stats_dtype(dtype)
    return (s_grid[0] * 3 * shape[1], None if partials == dtype else partials,
            plan_launch(batch_norm_stats_kernel, (*s_strides, *shape), stats),
            plan_launch(batch_norm_finalize_kernel,
                        (s_grid[0], shape[1], float(eps), float(momentum or 0.0)), finalize),
            plan_launch(batch_norm_normalize_kernel, (*n_strides, *shape, 0.0, *ZERO_SLOPE),
                        normalize))


def batch_norm_train_forward(x: torch.Tensor, out: torch.Tensor, weight=None, bias=None,
                             running_mean=None, running_var=None, num_batches_tracked=None,
                             momentum=0.1, eps: float = 1e-5, *, var_out=None):
    """A training step's batch_norm_stats, batch_norm_finalize and batch_norm_normalize (no
    residual, no activation) with one plan lookup: the same launches with the same
    arguments, so the same bits. x, out: (N, C, H, W), not empty; the rest as those take
    them. Returns (mean, invstd)."""
    launches = launches_for_train_forward(x, out, weight, bias, running_mean,
                                          num_batches_tracked, momentum, eps, var_out)
    return launch_train_forward(launches, x, out, weight, bias, running_mean, running_var,
                                num_batches_tracked, var_out)


def launches_for_train_forward(x, out, weight, bias, running_mean, num_batches_tracked,
                               momentum, eps: float, var_out=None) -> tuple:
    """``train_forward_launches`` of these tensors and options (as batch_norm_train_forward
    takes them)."""
    update = running_mean is not None
    cumulative = update and momentum is None
    if cumulative and num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    return train_forward_launches(
        x.shape, x.stride(), out.stride(), x.dtype, weight is not None, bias is not None,
        update, cumulative, num_batches_tracked is not None, var_out is not None, eps, momentum,
        knobs())


def launch_train_forward(launches: tuple, x: torch.Tensor, out: torch.Tensor, weight, bias,
                         running_mean, running_var, num_batches_tracked, var_out=None):
    """``batch_norm_train_forward`` with its launches looked up already
    (``train_forward_launches`` of these tensors and flags; momentum=None only with
    num_batches_tracked). Returns (mean, invstd)."""
    numel, dtype, stats_launch, finalize_launch, normalize_launch = launches
    # The partials (tiles, 3, C) flat (the kernels take pointers), and every size an int:
    # new_empty(int) of a tensor of the right dtype and device is the cheapest allocation.
    stats = x.new_empty(numel) if dtype is None else x.new_empty(numel, dtype=dtype)
    stats_launch(x, stats)
    c = x.shape[1]
    mean = stats.new_empty(c)
    invstd = stats.new_empty(c)
    update = running_mean is not None
    finalize_launch(
        stats, mean, invstd, var_out if var_out is not None else mean,
        running_mean if update else mean, running_var if update else mean,
        num_batches_tracked if finalize_launch.options["CUMULATIVE"] else mean)
    normalize_launch(
        x, out, mean, invstd,
        weight if weight is not None else mean, bias if bias is not None else mean,
        num_batches_tracked if num_batches_tracked is not None else mean, out)
    return mean, invstd


__all__ = ["batch_norm_stats", "batch_norm_finalize", "batch_norm_normalize", "stats_dtype",
           "tile_config", "spatial_strides", "tile_launch", "tile_plan", "reduce_launch",
           "reduce_plan", "knobs",
           "launch_slope", "ZERO_SLOPE", "batch_norm_train_forward", "train_forward_plan",
           "train_forward_launches", "launches_for_train_forward", "launch_train_forward",
           "batch_norm_stats_kernel", "batch_norm_finalize_kernel", "batch_norm_normalize_kernel"]

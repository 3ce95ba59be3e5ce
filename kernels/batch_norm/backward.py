"""Batch norm backward over (N, C, H, W), with the residual add and activation that may follow.

Forward (forward.py): xhat = (x - mean) * invstd, y = gamma * xhat + beta, and in a fused block
p = y + r (r a residual input, or none), z = act(p) (ACT, ``cnn.kernels.activation_math``).
With g = dz * act'(p) (g = dz without an activation), per channel over the M = N*H*W pixels:
    dr     = g                                    (the residual's gradient, elementwise)
    dbeta  = sum g,        dgamma = sum g * xhat
Training (mean and invstd are functions of x: d mean / d x_i = 1/M,
d invstd / d x_i = -invstd^3 (x_i - mean) / M):
    dx = gamma * invstd * (g - dbeta / M - xhat * dgamma / M)
Evaluation (running statistics are constants):
    dx = gamma * invstd * g
Launches: reduce (each tile's partial sums of g and g * xhat, (tiles, 2, C)); sums (a
fixed-order sum over tiles, so the result is deterministic without atomics; writes dgamma and
dbeta); input (dx, and dr where asked for). p is recomputed from x (and r) with the normalize
kernel's own expression, so no output needs keeping; under ReLU that costs what the ReLU mask
always did (the mask is p > 0).
"""
import torch
import triton
import triton.language as tl

from ..activation_math import NONE, activation_grad
from ..activation_slope import joined_slope
from ..direct_launch import plan_launch
from ..host_cache import host_cached
from ..runtime import accumulator_dtype
from .forward import (
    ZERO_SLOPE,
    channel_affine,
    knobs,
    launch_slope,
    normalized,
    reduce_launch,
    reduce_plan,
    stats_dtype,
    tile_launch,
    tile_offsets,
    tile_plan,
)
from .statistics import channel_block, partial_rows


@triton.jit
def gated_tile(dy_ptr, x_ptr, res_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr,
               sdyn, sdyc, sdyh, sdyw, sxn, sxc, sxh, sxw, srn, src, srh, srw,
               son, soc, soh, sow, C, H, W, eps, slope,
               FROM_VAR: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
               ACT: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HW_FLAT: tl.constexpr,
               HAS_OUT: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_HW: tl.constexpr,
               BLOCK_C: tl.constexpr):
    """Where both backward kernels start, on tile (program_id(0), program_id(1)):
    (g, x, mask, c, mask_c, mean, invstd, a, out_offs) with g = dy * act'(p), p the forward's
    pre-activation recomputed from x (and the residual, strides (srn, src, srh, srw)) with the
    normalize kernel's expression; the tile's mask; the channels c, mask_c and their mean,
    invstd and a = invstd * gamma; with HAS_OUT the tile's offsets in an output of strides
    (son, soc, soh, sow), else x's."""
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    c, mask_c = channel_block(pid_c, C, BLOCK_C)
    mean, invstd, a, b = channel_affine(mean_ptr, scale_ptr, weight_ptr, bias_ptr, c, mask_c,
                                        eps, FROM_VAR, HAS_WEIGHT, HAS_BIAS, ACC_DTYPE)
    dy_offs, mask_hw, _ = tile_offsets(pid, sdyn, sdyc, sdyh, sdyw, pid_c, H * W, W, C,
                                       HW_FLAT, BLOCK_HW, BLOCK_C)
    x_offs, _, _ = tile_offsets(pid, sxn, sxc, sxh, sxw, pid_c, H * W, W, C,
                                HW_FLAT, BLOCK_HW, BLOCK_C)
    out_offs = x_offs
    if HAS_OUT:
        out_offs, _, _ = tile_offsets(pid, son, soc, soh, sow, pid_c, H * W, W, C,
                                      HW_FLAT, BLOCK_HW, BLOCK_C)
    mask = mask_hw[:, None] & mask_c[None, :]
    dy = tl.load(dy_ptr + dy_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACT != 0:  # not NONE: the gradient goes through the activation at p
        p = normalized(x, mean, a, b)
        if HAS_RESIDUAL:
            r_offs, _, _ = tile_offsets(pid, srn, src, srh, srw, pid_c, H * W, W, C,
                                        HW_FLAT, BLOCK_HW, BLOCK_C)
            p += tl.load(res_ptr + r_offs, mask=mask, other=0.0).to(ACC_DTYPE)
        dy = activation_grad(p, dy, slope, ACT)
    return dy, x, mask, c, mask_c, mean, invstd, a, out_offs


@triton.jit
def batch_norm_backward_reduce_kernel(
    # pointers
    dy_ptr, x_ptr, res_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr, partial_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    # sizes and scalars
    N, C, H, W, eps, slope_hi, slope_lo,
    # meta-parameters
    FROM_VAR: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HW_FLAT: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """partial[tile, 0, c] = sum g, partial[tile, 1, c] = sum g * xhat over one tile."""
    g, x, mask, c, mask_c, mean, invstd, _, _ = gated_tile(
        dy_ptr, x_ptr, res_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr,
        sdyn, sdyc, sdyh, sdyw, sxn, sxc, sxh, sxw, srn, src, srh, srw, 0, 0, 0, 0,
        C, H, W, eps, joined_slope(slope_hi, slope_lo, ACC_DTYPE), FROM_VAR, HAS_WEIGHT,
        HAS_BIAS, ACT, HAS_RESIDUAL, HW_FLAT, False, ACC_DTYPE, BLOCK_HW, BLOCK_C)
    g = tl.where(mask, g, 0.0)
    xhat = (x - mean[None, :]) * invstd[None, :]
    row = partial_ptr + tl.program_id(0).to(tl.int64) * 2 * C + c
    tl.store(row, tl.sum(g, axis=0), mask=mask_c)
    tl.store(row + C, tl.sum(g * xhat, axis=0), mask=mask_c)


@triton.jit
def batch_norm_backward_sums_kernel(
    # pointers
    partial_ptr, sums_ptr, dweight_ptr, dbias_ptr,
    # sizes
    T, C,
    # meta-parameters
    WRITE_WEIGHT: tl.constexpr, WRITE_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """sums[0] = dbeta = sum_t partial[t, 0], sums[1] = dgamma = sum_t partial[t, 1], in a
    fixed order; also stored in the parameters' dtype as their gradients."""
    c, mask_c = channel_block(tl.program_id(0), C, BLOCK_C)
    sum_g = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    sum_gx = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    for t0 in range(0, T, BLOCK_T):
        rows, mask = partial_rows(partial_ptr, t0, T, c, mask_c, C, 2, BLOCK_T)
        sum_g += tl.sum(tl.load(rows, mask=mask, other=0.0).to(ACC_DTYPE), axis=0)
        sum_gx += tl.sum(tl.load(rows + C, mask=mask, other=0.0).to(ACC_DTYPE), axis=0)
    tl.store(sums_ptr + c, sum_g, mask=mask_c)
    tl.store(sums_ptr + C + c, sum_gx, mask=mask_c)
    if WRITE_WEIGHT:
        tl.store(dweight_ptr + c, sum_gx.to(dweight_ptr.dtype.element_ty), mask=mask_c)
    if WRITE_BIAS:
        tl.store(dbias_ptr + c, sum_g.to(dbias_ptr.dtype.element_ty), mask=mask_c)


@triton.jit
def batch_norm_backward_input_kernel(
    # pointers
    dy_ptr, x_ptr, dx_ptr, res_ptr, dres_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr,
    sums_ptr,
    # strides
    sdyn, sdyc, sdyh, sdyw,
    sxn, sxc, sxh, sxw,
    sdxn, sdxc, sdxh, sdxw,
    srn, src, srh, srw,
    sdrn, sdrc, sdrh, sdrw,
    # sizes and scalars
    N, C, H, W, eps, slope_hi, slope_lo,
    # meta-parameters
    TRAINING: tl.constexpr, FROM_VAR: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    WRITE_DX: tl.constexpr, WRITE_DRES: tl.constexpr, HW_FLAT: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx = gamma * invstd * (g - dbeta / M - xhat * dgamma / M) (training), or
    gamma * invstd * g (evaluation), where WRITE_DX; the residual's gradient g where
    WRITE_DRES (strides (sdrn, sdrc, sdrh, sdrw))."""
    g, x, mask, c, mask_c, mean, invstd, a, dx_offs = gated_tile(
        dy_ptr, x_ptr, res_ptr, mean_ptr, scale_ptr, weight_ptr, bias_ptr,
        sdyn, sdyc, sdyh, sdyw, sxn, sxc, sxh, sxw, srn, src, srh, srw,
        sdxn, sdxc, sdxh, sdxw, C, H, W, eps, joined_slope(slope_hi, slope_lo, ACC_DTYPE),
        FROM_VAR, HAS_WEIGHT, HAS_BIAS, ACT, HAS_RESIDUAL, HW_FLAT, True, ACC_DTYPE,
        BLOCK_HW, BLOCK_C)
    if WRITE_DRES:
        dr_offs, _, _ = tile_offsets(tl.program_id(0), sdrn, sdrc, sdrh, sdrw,
                                     tl.program_id(1), H * W, W, C, HW_FLAT, BLOCK_HW, BLOCK_C)
        tl.store(dres_ptr + dr_offs, g.to(dres_ptr.dtype.element_ty), mask=mask)
    if WRITE_DX:
        if TRAINING:
            # M in ACC_DTYPE without an int32 product (sizes of 1 arrive as constexprs)
            inv_m = 1.0 / ((tl.zeros((BLOCK_C,), dtype=ACC_DTYPE) + N) * H * W)
            mean_g = tl.load(sums_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE) * inv_m
            mean_gx = tl.load(sums_ptr + C + c, mask=mask_c, other=0.0).to(ACC_DTYPE) * inv_m
            xhat = (x - mean[None, :]) * invstd[None, :]
            g = g - mean_g[None, :] - xhat * mean_gx[None, :]
        dx = g * a[None, :]
        tl.store(dx_ptr + dx_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers

def batch_norm_backward_reduce(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                               scale: torch.Tensor, weight=None, bias=None, *,
                               eps: float = 0.0, from_var: bool = False,
                               activation: int = NONE, negative_slope: float = 0.0,
                               residual=None) -> torch.Tensor:
    """Per-tile partial sums of g and g * xhat: (tiles, 2, C), fp32 (fp64 for fp64).

    dy, x, residual (or None): (N, C, H, W) any strides, not empty; mean, scale (invstd, or
    variance when from_var), weight, bias: (C,) as in the forward; activation and
    negative_slope: the forward's (an ACT code)."""
    n, c, h, w = x.shape
    has_residual = residual is not None and activation != NONE  # read only to recompute p
    grid, strides, options = tile_launch(x, dy, x, residual if has_residual else x)
    partial = torch.empty((grid[0], 2, c), device=x.device, dtype=stats_dtype(x.dtype))
    if grid[0] == 0:
        return partial  # empty input: the sums come out zero
    batch_norm_backward_reduce_kernel.run(
        dy, x, residual if has_residual else x, mean, scale,
        weight if weight is not None else mean, bias if bias is not None else mean, partial,
        *strides, n, c, h, w, float(eps), *launch_slope(negative_slope),
        FROM_VAR=from_var, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        ACT=activation, HAS_RESIDUAL=has_residual, ACC_DTYPE=accumulator_dtype(x.dtype),
        grid=grid, warmup=False, **options,
    )
    return partial


def batch_norm_backward_sums(partial: torch.Tensor, weight=None, bias=None, *,
                             need_weight: bool = False, need_bias: bool = False):
    """(sums (2, C) = [sum g, sum g * xhat] in the partials' dtype, dweight or None, dbias or
    None) from partials (tiles, 2, C); the gradients take weight's and bias's dtypes."""
    tiles, _, c = partial.shape
    sums = torch.empty((2, c), device=partial.device, dtype=partial.dtype)
    dweight = torch.empty_like(weight) if need_weight else None
    dbias = torch.empty_like(bias) if need_bias else None
    grid, options = reduce_launch(tiles, c)
    batch_norm_backward_sums_kernel.run(
        partial, sums, dweight if need_weight else sums, dbias if need_bias else sums,
        tiles, c,
        WRITE_WEIGHT=need_weight, WRITE_BIAS=need_bias,
        ACC_DTYPE=accumulator_dtype(partial.dtype), grid=grid, warmup=False, **options,
    )
    return sums, dweight, dbias


def batch_norm_backward_input(dy: torch.Tensor, x: torch.Tensor, out, mean: torch.Tensor,
                              scale: torch.Tensor, weight=None, bias=None, sums=None, *,
                              eps: float = 0.0, from_var: bool = False, activation: int = NONE,
                              negative_slope: float = 0.0, residual=None,
                              residual_grad=None, training: bool = True):
    """out (N, C, H, W), written in place: the input gradient, from dy and x (N, C, H, W);
    sums (2, C) from batch_norm_backward_sums when training. out None: no input gradient.
    residual_grad (N, C, H, W) or None: the residual's gradient g, written in place.
    residual: the forward's (read to recompute p); any strides for every tensor."""
    n, c, h, w = x.shape
    if x.numel() == 0:
        return out
    has_residual = residual is not None and activation != NONE  # read only to recompute p
    write_dx = out is not None
    grid, strides, options = tile_launch(
        x, dy, x, out if write_dx else x, residual if has_residual else x,
        residual_grad if residual_grad is not None else x)
    batch_norm_backward_input_kernel.run(
        dy, x, out if write_dx else x, residual if has_residual else x,
        residual_grad if residual_grad is not None else x,
        mean, scale, weight if weight is not None else mean,
        bias if bias is not None else mean, sums if training and write_dx else mean,
        *strides, n, c, h, w, float(eps), *launch_slope(negative_slope),
        TRAINING=training and write_dx, FROM_VAR=from_var, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, ACT=activation, HAS_RESIDUAL=has_residual,
        WRITE_DX=write_dx, WRITE_DRES=residual_grad is not None,
        ACC_DTYPE=accumulator_dtype(x.dtype), grid=grid, warmup=False, **options,
    )
    return out


@host_cached()
def train_backward_plan(shape: torch.Size, dy_strides: tuple, x_strides: tuple,
                        dx_strides: tuple | None, knobs: tuple):
    """The launches of ``batch_norm_backward_training`` over a dy, x and dx (None: no dx) of
    this shape and these strides: (reduce launch, sums launch, input launch or None) as
    ``tile_plan`` and ``reduce_plan`` give them."""
    reduce = tile_plan(shape, x_strides[1], (dy_strides, x_strides, x_strides), knobs)
    sums = reduce_plan(reduce[0][0], shape[1], knobs)
    if dx_strides is None:
        return reduce, sums, None
    return reduce, sums, tile_plan(shape, x_strides[1], (dy_strides, x_strides, dx_strides,
                                                         x_strides, x_strides), knobs)


@host_cached()
def train_backward_launches(shape: torch.Size, dy_strides: tuple, x_strides: tuple,
                            dx_strides: tuple | None, dtype: torch.dtype, has_weight: bool,
                            has_bias: bool, need_weight: bool, need_bias: bool, eps: float,
                            knobs: tuple):
    """``train_backward_plan`` with every launch's arguments but the tensors fixed for these
    flags and eps: (partials' numel, then the reduce, sums and input (or None: no dx)
    Launches, each called with its tensors)."""
    (r_grid, r_strides, r_options), (s_grid, s_options), input_launch = train_backward_plan(
        shape, dy_strides, x_strides, dx_strides, knobs)
    acc = accumulator_dtype(dtype)
    reduce = dict(FROM_VAR=False, HAS_WEIGHT=has_weight, HAS_BIAS=has_bias, ACT=NONE,
                  HAS_RESIDUAL=False, ACC_DTYPE=acc, grid=r_grid, warmup=False, **r_options)
    sums = dict(WRITE_WEIGHT=need_weight, WRITE_BIAS=need_bias, ACC_DTYPE=acc, grid=s_grid,
                warmup=False, **s_options)
    dx = None
    if input_launch is not None:
        grid, strides, options = input_launch
        dx = plan_launch(batch_norm_backward_input_kernel,
                         (*strides, *shape, float(eps), *ZERO_SLOPE),
                         dict(TRAINING=True, FROM_VAR=False, HAS_WEIGHT=has_weight,
                              HAS_BIAS=has_bias, ACT=NONE, HAS_RESIDUAL=False, WRITE_DX=True,
                              WRITE_DRES=False, ACC_DTYPE=acc, grid=grid, warmup=False,
                              **options))
    return (r_grid[0] * 2 * shape[1],
            plan_launch(batch_norm_backward_reduce_kernel,
                        (*r_strides, *shape, float(eps), *ZERO_SLOPE), reduce),
            plan_launch(batch_norm_backward_sums_kernel, (r_grid[0], shape[1]), sums), dx)


def batch_norm_backward_training(dy: torch.Tensor, x: torch.Tensor, out, mean: torch.Tensor,
                                 invstd: torch.Tensor, weight=None, bias=None,
                                 eps: float = 0.0, need_weight: bool = False,
                                 need_bias: bool = False):
    """A training step's batch_norm_backward_reduce, batch_norm_backward_sums and
    batch_norm_backward_input (no residual, no activation) with one plan lookup: the same
    launches with the same arguments, so the same bits. dy, x: (N, C, H, W), not empty; out:
    the input gradient's (N, C, H, W), written in place, or None. Returns (dweight or None,
    dbias or None)."""
    launches = launches_for_train_backward(dy, x, out, weight, bias, eps, need_weight,
                                           need_bias)
    return launch_train_backward(launches, dy, x, out, mean, invstd, weight, bias)


def launches_for_train_backward(dy, x, out, weight, bias, eps: float, need_weight: bool,
                                need_bias: bool) -> tuple:
    """``train_backward_launches`` of these tensors (out: dx, or None) and flags."""
    return train_backward_launches(
        x.shape, dy.stride(), x.stride(), None if out is None else out.stride(), x.dtype,
        weight is not None, bias is not None, need_weight, need_bias, eps, knobs())


def launch_train_backward(launches: tuple, dy: torch.Tensor, x: torch.Tensor, out,
                          mean: torch.Tensor, invstd: torch.Tensor, weight, bias):
    """``batch_norm_backward_training`` with its launches looked up already
    (``train_backward_launches`` of these tensors and flags). Returns (dweight or None,
    dbias or None)."""
    numel, reduce_launch, sums_launch, input_launch = launches
    need_weight = sums_launch.options["WRITE_WEIGHT"]
    need_bias = sums_launch.options["WRITE_BIAS"]
    weight_or_mean = weight if weight is not None else mean
    bias_or_mean = bias if bias is not None else mean
    # The partials (tiles, 2, C) and the sums (2, C) flat (the kernels take pointers), in
    # mean's dtype (the statistics') by new_empty(int), the cheapest allocation.
    partial = mean.new_empty(numel)
    reduce_launch(dy, x, x, mean, invstd, weight_or_mean, bias_or_mean, partial)
    sums = mean.new_empty(2 * x.shape[1])
    dweight = torch.empty_like(weight) if need_weight else None
    dbias = torch.empty_like(bias) if need_bias else None
    sums_launch(partial, sums, dweight if need_weight else sums, dbias if need_bias else sums)
    if out is not None:
        input_launch(dy, x, out, x, x, mean, invstd, weight_or_mean, bias_or_mean, sums)
    return dweight, dbias


__all__ = ["batch_norm_backward_reduce", "batch_norm_backward_sums", "batch_norm_backward_input",
           "batch_norm_backward_reduce_kernel", "batch_norm_backward_sums_kernel",
           "batch_norm_backward_input_kernel", "batch_norm_backward_training",
           "train_backward_plan", "train_backward_launches", "launches_for_train_backward",
           "launch_train_backward"]

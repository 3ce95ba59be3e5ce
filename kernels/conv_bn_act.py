"""Fused conv2d + batch norm + activation (+ a residual input), and conv2d + activation: the
launch sequences, forward and backward, and the one elementwise kernel they add.

    z = act(bn(conv(x, w) + b) + r)        conv_bn_act (r: a residual of z's shape, or none)
    z = act(conv(x, w) + b + r)            conv_act (no batch norm: MyCNN's, VGG's blocks)
act is one of ``cnn.kernels.activation_math`` (an ACT code; negative_slope for LEAKY_RELU).

conv_bn_act, training forward, three launches and no other device work:
    1. conv2d_forward, STATS epilogue:  y = conv(x, w) + b, per-tile (count, mean, M2) of y
    2. batch_norm_finalize:             mean, invstd of y; running stats updated
    3. batch_norm_normalize:            z = act((y - mean) * invstd * gamma + beta + r);
                                        num_batches_tracked += 1
Evaluation forward, one launch: conv2d_forward with the batch norm folded into its epilogue,
    z = act((conv(x, w) + b) * s + beta - running_mean * s + r),
    s = gamma / sqrt(running_var + eps)
Backward, with xhat = (y - mean) * invstd, p = gamma * xhat + beta + r (recomputed from y, the
statistics and r, as the ReLU mask always was) and g = dz * act'(p):
    dr = g                                                       (in r's own layout)
    dgamma = sum g * xhat,  dbeta = sum g                        (per channel, deterministic)
    dy = gamma * invstd * (g - dbeta / M - xhat * dgamma / M)    training (batch statistics)
    dy = gamma * invstd * g                                      evaluation (running statistics)
    dx = conv2d_input_grad(dy, w),  (dw, db) = conv2d_weight_grad(dy, x)
Evaluation keeps no activation (the output may be modified in place afterwards, as by a
following nn.ReLU(inplace=True)), so its backward recomputes y with one more conv launch.

conv_act, forward: one launch (conv2d_forward with residual and activation in its epilogue);
with a backward to come, the same launch also stores p = conv(x, w) + b + r (not needed
without an activation). Backward:
    g = dz * act'(p)    (gated_gradient_kernel below; dr = g, in r's layout)
    dx = conv2d_input_grad(g, w),  (dw, db) = conv2d_weight_grad(g, x)
"""
import torch
import triton
import triton.language as tl

from .activation_math import NONE, RELU, activation_grad
from .activation_slope import joined_slope, slope_parts
from .batch_norm.backward import (
    batch_norm_backward_input,
    batch_norm_backward_reduce,
    batch_norm_backward_sums,
)
from .batch_norm.forward import (
    batch_norm_finalize,
    batch_norm_normalize,
    tile_launch,
    tile_offsets,
)
from .conv2d.dispatch import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .conv2d.geometry import Conv2dGeometry
from .runtime import accumulator_dtype


@triton.jit
def gated_gradient_kernel(
    # pointers
    dz_ptr, pre_ptr, g_ptr, dres_ptr,
    # strides
    sdzn, sdzc, sdzh, sdzw,
    spn, spc, sph, spw,
    sgn, sgc, sgh, sgw,
    sdrn, sdrc, sdrh, sdrw,
    # sizes and scalars
    N, C, H, W, slope_hi, slope_lo,
    # meta-parameters
    ACT: tl.constexpr, WRITE_G: tl.constexpr, WRITE_DRES: tl.constexpr,
    HW_FLAT: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """g = dz * act'(pre) on one (pixels x channels) tile, stored to g (WRITE_G) and to dres
    (WRITE_DRES), each with its own strides."""
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    dz_offs, mask_hw, mask_c = tile_offsets(pid, sdzn, sdzc, sdzh, sdzw, pid_c, H * W, W, C,
                                            HW_FLAT, BLOCK_HW, BLOCK_C)
    p_offs, _, _ = tile_offsets(pid, spn, spc, sph, spw, pid_c, H * W, W, C,
                                HW_FLAT, BLOCK_HW, BLOCK_C)
    mask = mask_hw[:, None] & mask_c[None, :]
    dz = tl.load(dz_ptr + dz_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    p = tl.load(pre_ptr + p_offs, mask=mask, other=0.0).to(ACC_DTYPE)
    g = activation_grad(p, dz, joined_slope(slope_hi, slope_lo, ACC_DTYPE), ACT)
    if WRITE_G:
        g_offs, _, _ = tile_offsets(pid, sgn, sgc, sgh, sgw, pid_c, H * W, W, C,
                                    HW_FLAT, BLOCK_HW, BLOCK_C)
        tl.store(g_ptr + g_offs, g.to(g_ptr.dtype.element_ty), mask=mask)
    if WRITE_DRES:
        dr_offs, _, _ = tile_offsets(pid, sdrn, sdrc, sdrh, sdrw, pid_c, H * W, W, C,
                                     HW_FLAT, BLOCK_HW, BLOCK_C)
        tl.store(dres_ptr + dr_offs, g.to(dres_ptr.dtype.element_ty), mask=mask)


def gated_gradient(grad_z: torch.Tensor, pre: torch.Tensor, *, activation: int,
                        negative_slope: float = 0.0, need_g: bool = True,
                        residual_grad=None):
    """g = grad_z * act'(pre), (N, C, H, W) laid out as pre (None unless need_g); also
    written into residual_grad (any strides) when given. One launch."""
    n, c, h, w = pre.shape
    g = torch.empty_like(pre) if need_g else None
    if pre.numel() == 0 or (g is None and residual_grad is None):
        return g
    outs = [t if t is not None else pre for t in (g, residual_grad)]
    grid, strides, options = tile_launch(pre, grad_z, pre, *outs)
    gated_gradient_kernel[grid](
        grad_z, pre, *outs, *strides, n, c, h, w, *slope_parts(negative_slope),
        ACT=activation, WRITE_G=need_g, WRITE_DRES=residual_grad is not None,
        ACC_DTYPE=accumulator_dtype(pre.dtype), **options)
    return g


def conv_bn_act_train_forward(x: torch.Tensor, weight: torch.Tensor, bias,
                              geometry: Conv2dGeometry, bn_weight=None, bn_bias=None,
                              running_mean=None, running_var=None, num_batches_tracked=None,
                              momentum=0.1, eps: float = 1e-5, *, activation: int = RELU,
                              negative_slope: float = 0.01, residual=None):
    """Training-mode forward with batch statistics.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, KH, KW); bias, bn_weight, bn_bias,
    running_mean, running_var: (C_out,) or None (running stats None: no update);
    num_batches_tracked: 0-dim int64 tensor advanced by one (and the cumulative average's
    count when momentum is None), or None; residual: (N, C_out, OH, OW), any strides, or None.
    Returns (z, y, mean, invstd, var): z and the conv output y (N, C_out, OH, OW) in x's
    layout; mean and invstd (C_out,) fp32 (fp64 for fp64) for the backward, and var, the
    unbiased batch variance, for a running-stats update done apart (batch_norm_update_stats).
    y must not be empty.
    """
    y, stats = conv2d_forward(x, weight, bias, geometry, stats=True)
    var = torch.empty((stats.shape[2],), device=stats.device, dtype=stats.dtype)
    mean, invstd = batch_norm_finalize(stats, running_mean, running_var, num_batches_tracked,
                                       momentum, eps, var_out=var)
    z = torch.empty_like(y)
    batch_norm_normalize(y, z, mean, invstd, bn_weight, bn_bias, activation=activation,
                         negative_slope=negative_slope, residual=residual,
                         num_batches_tracked=num_batches_tracked)
    return z, y, mean, invstd, var


def conv_bn_act_eval_forward(x: torch.Tensor, weight: torch.Tensor, bias,
                             geometry: Conv2dGeometry, bn_weight, bn_bias,
                             running_mean: torch.Tensor, running_var: torch.Tensor,
                             eps: float = 1e-5, *, activation: int = RELU,
                             negative_slope: float = 0.01, residual=None) -> torch.Tensor:
    """Evaluation-mode forward, one launch: z (N, C_out, OH, OW) in x's layout."""
    return conv2d_forward(x, weight, bias, geometry, activation=activation,
                          negative_slope=negative_slope, residual=residual,
                          bn_eval=(running_mean, running_var, bn_weight, bn_bias, eps))


def conv_bn_act_backward(grad_z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias,
                         geometry: Conv2dGeometry, bn_weight, bn_bias, mean: torch.Tensor,
                         scale: torch.Tensor, *, eps: float, training: bool, y=None,
                         activation: int = RELU, negative_slope: float = 0.01, residual=None,
                         needs=(True,) * 6):
    """Gradients (dx, dw, db, dgamma, dbeta, dresidual), each None unless asked for in
    ``needs``; dresidual is laid out as the residual.

    training: y is the saved conv output, mean/scale the batch mean and invstd.
    evaluation: y is None (recomputed here), mean/scale the running mean and variance.
    grad_z: (N, C_out, OH, OW), any strides."""
    need_x, need_w, need_b, need_gamma, need_beta, need_res = needs
    need_gamma = need_gamma and bn_weight is not None
    need_beta = need_beta and bn_bias is not None
    need_b = need_b and bias is not None
    need_res = need_res and residual is not None
    need_conv = need_x or need_w or need_b
    act = dict(activation=activation, negative_slope=negative_slope, residual=residual)
    sums = dgamma = dbeta = None
    if y is None and (need_conv or need_gamma or need_beta or need_res):
        y = conv2d_forward(x, weight, bias, geometry)  # evaluation kept no activation
    if (training and need_conv) or need_gamma or need_beta:
        partial = batch_norm_backward_reduce(grad_z, y, mean, scale, bn_weight, bn_bias, eps=eps,
                                             from_var=not training, **act)
        sums, dgamma, dbeta = batch_norm_backward_sums(partial, bn_weight, bn_bias,
                                                       need_weight=need_gamma,
                                                       need_bias=need_beta)
    dx = dw = db = None
    dres = torch.empty_like(residual) if need_res else None
    if need_conv or need_res:
        dy = batch_norm_backward_input(grad_z, y, torch.empty_like(y) if need_conv else None,
                                       mean, scale, bn_weight, bn_bias, sums, eps=eps,
                                       from_var=not training, residual_grad=dres,
                                       training=training, **act)
        if need_x:
            dx = conv2d_input_grad(dy, weight, x, geometry)
        if need_w or need_b:
            dw, db = conv2d_weight_grad(dy, x, weight, geometry, need_bias=need_b)
    return dx, dw if need_w else None, db, dgamma, dbeta, dres


def conv_act_forward(x: torch.Tensor, weight: torch.Tensor, bias, geometry: Conv2dGeometry, *,
                     activation: int = RELU, negative_slope: float = 0.01, residual=None,
                     keep_pre: bool = False):
    """z = act(conv(x, w) + b + r) in one launch: (N, C_out, OH, OW) in x's layout; with
    keep_pre (z, p), p = conv(x, w) + b + r laid out as z, for conv_act_backward."""
    return conv2d_forward(x, weight, bias, geometry, activation=activation,
                          negative_slope=negative_slope, residual=residual, keep_pre=keep_pre)


def conv_act_backward(grad_z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias,
                      geometry: Conv2dGeometry, pre: torch.Tensor, *, activation: int = RELU,
                      negative_slope: float = 0.01, residual=None, needs=(True,) * 4):
    """Gradients (dx, dw, db, dresidual), each None unless asked for in ``needs``; pre is
    conv_act_forward's p (None without an activation); dresidual is laid out as the
    residual."""
    need_x, need_w, need_b, need_res = needs
    need_b = need_b and bias is not None
    need_res = need_res and residual is not None
    need_conv = need_x or need_w or need_b
    dres = torch.empty_like(residual) if need_res else None
    if activation == NONE:
        g = grad_z  # z = p: the conv's gradient is dz itself, and so is the residual's
        gated_gradient(grad_z, grad_z, activation=NONE, need_g=False, residual_grad=dres)
    else:
        g = gated_gradient(grad_z, pre, activation=activation,
                                negative_slope=negative_slope, need_g=need_conv,
                                residual_grad=dres)
    dx = dw = db = None
    if need_x:
        dx = conv2d_input_grad(g, weight, x, geometry)
    if need_w or need_b:
        dw, db = conv2d_weight_grad(g, x, weight, geometry, need_bias=need_b)
    return dx, dw if need_w else None, db, dres


__all__ = ["conv_bn_act_train_forward", "conv_bn_act_eval_forward", "conv_bn_act_backward",
           "conv_act_forward", "conv_act_backward", "gated_gradient",
           "gated_gradient_kernel"]

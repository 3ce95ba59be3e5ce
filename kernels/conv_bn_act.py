"""Fused conv2d + batch norm + ReLU: the launch sequences, forward and backward.

Training forward, three launches and no other device work:
    1. conv2d_forward, STATS epilogue:  y = conv(x, w) + b, per-tile (count, mean, M2) of y
    2. batch_norm_finalize:             mean, invstd of y; running stats updated
    3. batch_norm_normalize:            z = max((y - mean) * invstd * gamma + beta, 0);
                                        num_batches_tracked += 1
Evaluation forward, one launch: conv2d_forward with the batch norm folded into its epilogue,
    z = max((conv(x, w) + b) * s + beta - running_mean * s, 0),  s = gamma / sqrt(running_var + eps)
Backward, with g = dz * (z > 0) and xhat = (y - mean) * invstd:
    dgamma = sum g * xhat,  dbeta = sum g                        (per channel, deterministic)
    dy = gamma * invstd * (g - dbeta / M - xhat * dgamma / M)    training (batch statistics)
    dy = gamma * invstd * g                                      evaluation (running statistics)
    dx = conv2d_input_grad(dy, w),  (dw, db) = conv2d_weight_grad(dy, x)
Evaluation keeps no activation (the output may be modified in place afterwards, as by a
following nn.ReLU(inplace=True)), so its backward recomputes y with one more conv launch.
"""
import torch

from .batch_norm.backward import (
    MASK_RECOMPUTE,
    batch_norm_backward_input,
    batch_norm_backward_reduce,
    batch_norm_backward_sums,
)
from .batch_norm.forward import batch_norm_finalize, batch_norm_normalize
from .conv2d.dispatch import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .conv2d.geometry import Conv2dGeometry


def conv_bn_act_train_forward(x: torch.Tensor, weight: torch.Tensor, bias,
                               geometry: Conv2dGeometry, bn_weight=None, bn_bias=None,
                               running_mean=None, running_var=None, num_batches_tracked=None,
                               momentum=0.1, eps: float = 1e-5):
    """Training-mode forward with batch statistics.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, KH, KW); bias, bn_weight, bn_bias,
    running_mean, running_var: (C_out,) or None (running stats None: no update);
    num_batches_tracked: 0-dim int64 tensor advanced by one (and the cumulative average's
    count when momentum is None), or None.
    Returns (z, y, mean, invstd): z and the conv output y (N, C_out, OH, OW) in x's layout,
    mean and invstd (C_out,) fp32 (fp64 for fp64) for the backward. y must not be empty.
    """
    y, stats = conv2d_forward(x, weight, bias, geometry, stats=True)
    mean, invstd = batch_norm_finalize(stats, running_mean, running_var, num_batches_tracked,
                                       momentum, eps)
    z = torch.empty_like(y)
    batch_norm_normalize(y, z, mean, invstd, bn_weight, bn_bias, relu=True,
                         num_batches_tracked=num_batches_tracked)
    return z, y, mean, invstd


def conv_bn_act_eval_forward(x: torch.Tensor, weight: torch.Tensor, bias,
                              geometry: Conv2dGeometry, bn_weight, bn_bias,
                              running_mean: torch.Tensor, running_var: torch.Tensor,
                              eps: float = 1e-5) -> torch.Tensor:
    """Evaluation-mode forward, one launch: z (N, C_out, OH, OW) in x's layout."""
    return conv2d_forward(x, weight, bias, geometry, relu=True,
                          bn_eval=(running_mean, running_var, bn_weight, bn_bias, eps))


def conv_bn_act_backward(grad_z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias,
                          geometry: Conv2dGeometry, bn_weight, bn_bias, mean: torch.Tensor,
                          scale: torch.Tensor, *, eps: float, training: bool, y=None,
                          needs=(True,) * 5):
    """Gradients (dx, dw, db, dgamma, dbeta), each None unless asked for in ``needs``.

    training: y is the saved conv output, mean/scale the batch mean and invstd.
    evaluation: y is None (recomputed here), mean/scale the running mean and variance.
    grad_z: (N, C_out, OH, OW), any strides."""
    need_x, need_w, need_b, need_gamma, need_beta = needs
    need_gamma = need_gamma and bn_weight is not None
    need_beta = need_beta and bn_bias is not None
    need_b = need_b and bias is not None
    need_conv = need_x or need_w or need_b
    sums = dgamma = dbeta = None
    if y is None and (need_conv or need_gamma or need_beta):
        y = conv2d_forward(x, weight, bias, geometry)  # evaluation kept no activation
    if (training and need_conv) or need_gamma or need_beta:
        partial = batch_norm_backward_reduce(grad_z, y, mean, scale, bn_weight, bn_bias, eps=eps,
                                             from_var=not training, relu_mask=MASK_RECOMPUTE)
        sums, dgamma, dbeta = batch_norm_backward_sums(partial, bn_weight, bn_bias,
                                                       need_weight=need_gamma,
                                                       need_bias=need_beta)
    dx = dw = db = None
    if need_conv:
        dy = batch_norm_backward_input(grad_z, y, torch.empty_like(y), mean, scale,
                                       bn_weight, bn_bias, sums, eps=eps,
                                       from_var=not training, relu_mask=MASK_RECOMPUTE,
                                       training=training)
        if need_x:
            dx = conv2d_input_grad(dy, weight, x, geometry)
        if need_w or need_b:
            dw, db = conv2d_weight_grad(dy, x, weight, geometry, need_bias=need_b)
    return dx, dw if need_w else None, db, dgamma, dbeta


__all__ = ["conv_bn_act_train_forward", "conv_bn_act_eval_forward", "conv_bn_act_backward"]

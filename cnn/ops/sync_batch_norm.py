"""The autograd Functions of synced batch norm: batch norm whose statistics span the processes
of a process group (SyncBatchNormFunction), and the fused conv + batch norm + ReLU with those
statistics (SyncConvBNReLUFunction). Arguments are checked by cnn.functional.sync_batch_norm.

Forward, per layer:
    1. each process: per-tile (count, mean, M2) of its batch (batch_norm_stats), merged into one
       (3, C) row (batch_norm_merge_stats);
    2. one all_gather of those rows -> (world, 3, C), in rank order on every process;
    3. batch_norm_finalize merges them with Chan's formula (exact, no E[x^2] - E[x]^2
       cancellation) into the global mean and invstd and updates the running statistics with
       the global (unbiased) variance, as torch's SyncBatchNorm does;
    4. batch_norm_normalize on the local batch.
Backward: the local per-channel sums (sum g, sum g * xhat) (batch_norm_backward_reduce/sums)
are all-reduced, then batch_norm_backward_input gives dx with M the global count. The weight
and bias gradients stay local: DistributedDataParallel averages parameter gradients itself.
The fused conv + batch norm + ReLU does the same between its launches (SyncConvBNReLUFunction).
Every process must run the same layers in the same order (as with any collective).
"""
import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ..kernels.activation_math import RELU
from ..kernels.batch_norm.backward import (
    batch_norm_backward_input,
    batch_norm_backward_reduce,
    batch_norm_backward_sums,
)
from ..kernels.batch_norm.forward import (
    batch_norm_finalize,
    batch_norm_normalize,
    batch_norm_stats,
    stats_dtype,
)
from ..kernels.batch_norm.merge import batch_norm_merge_stats
from ..kernels.conv2d import Conv2dGeometry, conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .batch_norm import as_4d, empty_grad_input, empty_output

# torch 2.13 renames all_gather_into_tensor (which older versions have only).
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def gather_statistics(local: torch.Tensor, process_group, world_size: int) -> torch.Tensor:
    """(3, C) rows of every process -> (world_size, 3, C), in rank order: one collective."""
    rows, c = local.shape
    gathered = torch.empty((world_size * rows, c), device=local.device, dtype=local.dtype)
    all_gather_single(gathered, local, group=process_group)  # concatenated along dim 0
    return gathered.view(world_size, rows, c)


def global_statistics(stats, shape, like, running_mean, running_var, num_batches_tracked,
                      momentum, eps, process_group, world_size: int):
    """(mean, invstd, local_share) over the whole group from this process's partials stats
    (tiles, 3, C), or None for an empty local batch of (N, C, H, W) ``shape``; the running
    statistics are updated in place. local_share (C,) = local count / global count: the
    input-gradient kernel divides the all-reduced sums by its own (local) count, and
    scaling them by local_share makes that the global mean."""
    c = shape[1]
    local = torch.zeros((3, c), device=like.device, dtype=stats_dtype(like.dtype))
    if stats is not None:
        batch_norm_merge_stats(stats, out=local)
    gathered = gather_statistics(local, process_group, world_size)
    mean, invstd = batch_norm_finalize(gathered, running_mean, running_var,
                                       num_batches_tracked, momentum, eps)
    local_count = shape[0] * shape[2] * shape[3]
    local_share = local_count / gathered[:, 0].sum(0).clamp(min=1.0)
    return mean, invstd, local_share


def local_sums(grad_output: torch.Tensor, x: torch.Tensor, mean, invstd, weight, bias,
               need_weight: bool, need_bias: bool, **act):
    """(sums, grad_weight, grad_bias) of this process: sums (2, C) [sum g, sum g * xhat] for
    all_reduce_sums, and the parameter gradients asked for (else None), of (N, C, H, W) x.
    An empty local batch still joins the collective; its parameter gradients are zero (not
    None, so DistributedDataParallel's gradient hooks fire on every process). act: the
    activation that followed the batch norm, if any (``batch_norm_backward_reduce``'s
    keywords)."""
    if x.numel() > 0:
        partial = batch_norm_backward_reduce(grad_output, x, mean, invstd, weight, bias, **act)
        return batch_norm_backward_sums(partial, weight, bias, need_weight=need_weight,
                                        need_bias=need_bias)
    sums = torch.zeros((2, x.shape[1]), device=x.device, dtype=mean.dtype)
    return (sums, torch.zeros_like(weight) if need_weight else None,
            torch.zeros_like(bias) if need_bias else None)


def all_reduce_sums(sums: torch.Tensor, process_group) -> torch.Tensor:
    """(2, C) [sum g, sum g * xhat] of this process -> their sums over the group, in place."""
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=process_group)
    return sums


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over channel dim 1 with statistics of the whole process group.

    input (N, C, ...) any strides; weight, bias, running_mean, running_var (C,) or None;
    num_batches_tracked a 0-dim int64 counter advanced by one, or None (momentum None then
    means the cumulative average over it). Returns a tensor shaped like input, in its layout.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, num_batches_tracked,
                momentum, eps: float, process_group, world_size: int):
        x4 = as_4d(input)
        stats = batch_norm_stats(x4) if input.numel() > 0 else None
        mean, invstd, local_share = global_statistics(
            stats, x4.shape, input, running_mean, running_var, num_batches_tracked, momentum,
            eps, process_group, world_size)
        out = empty_output(input, weight, bias, running_mean, running_var)
        if input.numel() > 0:
            batch_norm_normalize(x4, as_4d(out), mean, invstd, weight, bias,
                                 num_batches_tracked=num_batches_tracked)
        elif num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        ctx.save_for_backward(input, weight, bias, mean, invstd, local_share)
        ctx.eps, ctx.process_group = eps, process_group
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight, bias, mean, invstd, local_share = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_w = need_w and weight is not None
        need_b = need_b and bias is not None
        x4, dy4 = as_4d(input), as_4d(grad_output)
        grad_input = None
        sums, grad_weight, grad_bias = local_sums(dy4, x4, mean, invstd, weight, bias, need_w,
                                                  need_b)
        if need_x:
            all_reduce_sums(sums, ctx.process_group)
            grad_input = empty_grad_input(input, grad_output)
            batch_norm_backward_input(dy4, x4, as_4d(grad_input), mean, invstd, weight, bias,
                                      sums * local_share, training=True)
        return (grad_input, grad_weight, grad_bias) + (None,) * 7


class SyncConvBNReLUFunction(torch.autograd.Function):
    """z = relu(sync_batch_norm(conv2d(x, w) + b)) in training mode: the fused layer's
    launches (kernels/conv_bn_act.py) with the group's statistics between them.

    Forward: conv with the statistics epilogue -> merge -> all_gather -> finalize ->
    normalize + ReLU. Backward: ReLU mask and batch-norm reductions, all_reduce of the two
    sums, dy, then the conv backward kernels.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                num_batches_tracked, geometry: Conv2dGeometry, momentum, eps: float,
                process_group, world_size: int):
        shape = geometry.output_shape
        empty = shape[0] * shape[2] * shape[3] == 0
        if empty:
            y = torch.empty(shape, device=input.device, dtype=input.dtype)
            stats = None
        else:
            y, stats = conv2d_forward(input, weight, bias, geometry, stats=True)
        mean, invstd, local_share = global_statistics(
            stats, shape, input, running_mean, running_var, num_batches_tracked, momentum,
            eps, process_group, world_size)
        z = torch.empty_like(y)
        if not empty:
            batch_norm_normalize(y, z, mean, invstd, bn_weight, bn_bias, activation=RELU,
                                 num_batches_tracked=num_batches_tracked)
        elif num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, y, mean, invstd,
                              local_share)
        ctx.geometry, ctx.eps, ctx.process_group = geometry, eps, process_group
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):
        input, weight, bias, bn_weight, bn_bias, y, mean, invstd, local_share = \
            ctx.saved_tensors
        need_x, need_w, need_b, need_gamma, need_beta = ctx.needs_input_grad[:5]
        need_b = need_b and bias is not None
        need_gamma = need_gamma and bn_weight is not None
        need_beta = need_beta and bn_bias is not None
        need_conv = need_x or need_w or need_b
        sums, dgamma, dbeta = local_sums(grad_z, y, mean, invstd, bn_weight, bn_bias,
                                         need_gamma, need_beta, activation=RELU)
        dx = dw = db = None
        if need_conv:
            all_reduce_sums(sums, ctx.process_group)
            if y.numel() > 0:
                dy = batch_norm_backward_input(grad_z, y, torch.empty_like(y), mean, invstd,
                                               bn_weight, bn_bias, sums * local_share,
                                               activation=RELU, training=True)
                if need_x:
                    dx = conv2d_input_grad(dy, weight, input, ctx.geometry)
                if need_w or need_b:
                    dw, db = conv2d_weight_grad(dy, input, weight, ctx.geometry,
                                                need_bias=need_b)
            else:
                # Nothing reached this process's conv; zeros (not None) keep DDP's hooks.
                dx = torch.zeros_like(input) if need_x else None
                dw = torch.zeros_like(weight)
                db = torch.zeros_like(bias) if need_b else None
        return (dx, dw if need_w else None, db, dgamma, dbeta) + (None,) * 8


__all__ = ["SyncBatchNormFunction", "SyncConvBNReLUFunction", "gather_statistics",
           "global_statistics", "local_sums", "all_reduce_sums"]

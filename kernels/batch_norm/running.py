"""Batch norm's running statistics: the update torch.nn.BatchNorm2d makes after a training batch.

Per channel c, from the batch's mean and unbiased variance var = sum (x - mean)^2 / (M - 1):
    running_mean <- (1 - f) * running_mean + f * mean
    running_var  <- (1 - f) * running_var  + f * var
    f = momentum, or 1 / (num_batches_tracked + 1) (a cumulative average) when momentum is None
    num_batches_tracked <- num_batches_tracked + 1
Nothing here is differentiated: the running statistics are state, not outputs.

``momentum_factor`` and ``running_update`` are that arithmetic; two kernels apply it:
batch_norm_finalize_kernel (forward.py), as it merges a batch's statistics (eager training: the
update costs no launch), and batch_norm_update_stats_kernel here, from a finished (mean, var)
pair (training as a functional op followed by the update, as torch.compile and export see it).
Both run the same device functions on the same fp32 (fp64) values, so both give the same bits.
"""
import torch
import triton
import triton.language as tl

from ..runtime import INTERPRET, accumulator_dtype, next_power_of_2

GPU_WARPS = 4
# Channels per step of the update's single program (it loops over the rest).
UPDATE_BLOCK_C = 4096 if INTERPRET else 1024


@triton.jit
def momentum_factor(nbt_ptr, momentum, CUMULATIVE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """f of a channel block: momentum, or 1 / (num_batches_tracked + 1) when CUMULATIVE (the
    counter as it was before this batch)."""
    if CUMULATIVE:
        f = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE) + 1.0 / (tl.load(nbt_ptr).to(ACC_DTYPE) + 1.0)
    else:
        f = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE) + momentum
    return f


@triton.jit
def running_update(running_mean_ptr, running_var_ptr, c, mask_c, mean, var, f,
                   ACC_DTYPE: tl.constexpr):
    """running = (1 - f) * running + f * batch for the channels c, in the running stats'
    dtype; mean and var (the unbiased batch variance) in ACC_DTYPE."""
    rm = tl.load(running_mean_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
    rv = tl.load(running_var_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
    tl.store(running_mean_ptr + c, (f * mean + (1.0 - f) * rm).to(
        running_mean_ptr.dtype.element_ty), mask=mask_c)
    tl.store(running_var_ptr + c, (f * var + (1.0 - f) * rv).to(
        running_var_ptr.dtype.element_ty), mask=mask_c)


@triton.jit
def batch_norm_update_stats_kernel(
    # pointers
    running_mean_ptr, running_var_ptr, nbt_ptr, mean_ptr, var_ptr,
    # sizes and scalars
    C, momentum,
    # meta-parameters
    UPDATE_RUNNING: tl.constexpr, CUMULATIVE: tl.constexpr, COUNT_BATCH: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One program: the running stats of every channel block in turn, then the counter.
    A single program, so the counter can be read (CUMULATIVE) and advanced in one launch."""
    if UPDATE_RUNNING:
        f = momentum_factor(nbt_ptr, momentum, CUMULATIVE, ACC_DTYPE, BLOCK_C)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            mask_c = c < C
            mean = tl.load(mean_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
            var = tl.load(var_ptr + c, mask=mask_c, other=0.0).to(ACC_DTYPE)
            running_update(running_mean_ptr, running_var_ptr, c, mask_c, mean, var, f,
                           ACC_DTYPE)
    if COUNT_BATCH:
        # Every warp has read the counter before any advances it.
        tl.debug_barrier()
        tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)


def batch_norm_update_stats(running_mean=None, running_var=None, num_batches_tracked=None, *,
                            mean: torch.Tensor, var: torch.Tensor, momentum=0.1) -> None:
    """Update running_mean, running_var (C,) in place from a batch's mean and unbiased var
    (C,) (fp32, fp64 for fp64) with factor momentum, or, when momentum is None,
    1 / (num_batches_tracked + 1); then advance num_batches_tracked (0-dim int64) by one.
    Running stats None: only the counter; counter None: only the running stats (momentum
    must then be a number). One launch, none when there is nothing to update."""
    update = running_mean is not None
    count = num_batches_tracked is not None
    cumulative = update and momentum is None
    if cumulative and not count:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    if not (update or count):
        return
    c = mean.numel()
    batch_norm_update_stats_kernel[(1,)](
        running_mean if update else mean, running_var if update else mean,
        num_batches_tracked if count else mean, mean, var,
        c, float(momentum or 0.0),
        UPDATE_RUNNING=update, CUMULATIVE=cumulative, COUNT_BATCH=count,
        ACC_DTYPE=accumulator_dtype(mean.dtype), BLOCK_C=min(UPDATE_BLOCK_C, next_power_of_2(c)),
        num_warps=GPU_WARPS,
    )


__all__ = ["batch_norm_update_stats", "batch_norm_update_stats_kernel", "momentum_factor",
           "running_update"]

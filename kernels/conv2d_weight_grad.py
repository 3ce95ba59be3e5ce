"""Conv2d weight and bias gradients as a split-reduction GEMM.

Backward of y = conv2d(x, w) + b with respect to w and b:
    dw[co, ci, kh, kw] = sum_{n, oh, ow} dy[n, co, oh, ow] * x[n, g*Cg + ci, oh*sh - ph + kh*dh,
                                                              ow*sw - pw + kw*dw]
    db[co]             = sum_{n, oh, ow} dy[n, co, oh, ow]
GEMM view, per group: rows = C_out/groups, columns = KH*KW*(C_in/groups) in (kh, kw, ci) order,
reduction R = N*OH*OW. R is long and the output small, so R is split across SPLIT programs per
output tile; each writes its own fp32 partial slot and the slots are summed in a fixed order,
so the result is deterministic (no atomics). The bias gradient is summed from the same dy tiles.
"""
import torch
import triton
import triton.language as tl

from .configs import implicit_gemm_configs, interpreter_tiles
from .conv2d_geometry import Conv2dGeometry
from .runtime import (
    INTERPRET,
    accumulator_dtype,
    cdiv,
    dot_precision,
    dot_upcast,
    multiprocessor_count,
    needs_int64,
)


@triton.autotune(
    configs=implicit_gemm_configs(interpret_tiles={"BLOCK_K": 2048}),
    key=["N", "H", "W", "OH", "OW", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
         "C_in_g", "C_out_g", "groups", "SPLIT", "HAS_BIAS",
         "INPUT_PRECISION"],
)
@interpreter_tiles(BLOCK_M="C_out_g", BLOCK_N="KDIM")
@triton.jit
def conv2d_weight_grad_kernel(
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    sdyn, sdyc, sdyh, sdyw,
    sxn, sxc, sxh, sxw,
    N, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, C_in_g, C_out_g, KDIM,
    SPLIT, R_PER_SPLIT,
    HAS_BIAS: tl.constexpr, INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2) % SPLIT
    group = tl.program_id(2) // SPLIT
    R = N * OH * OW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < C_out_g
    mask_n = offs_n < KDIM
    co = group * C_out_g + offs_m
    ci = offs_n % C_in_g
    kw = (offs_n // C_in_g) % KW
    kh = offs_n // (C_in_g * KW)
    # Offsets split into a part per output-tile row/column and a part per reduction index r.
    dy_rows = co * sdyc
    x_cols = (group * C_in_g + ci) * sxc + (kh * dil_h) * sxh + (kw * dil_w) * sxw

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    r_start = split * R_PER_SPLIT
    r_end = tl.minimum(R, r_start + R_PER_SPLIT)
    for r0 in range(r_start, r_end, BLOCK_K):
        offs_r = r0 + tl.arange(0, BLOCK_K)
        mask_r = offs_r < r_end
        ow = offs_r % OW
        oh = (offs_r // OW) % OH
        n = offs_r // (OW * OH)
        if INDEX_64:
            n = n.to(tl.int64)
        a = tl.load(dy_ptr + (dy_rows[:, None] + (n * sdyn + oh * sdyh + ow * sdyw)[None, :]),
                    mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        ih0 = oh * stride_h - pad_h
        iw0 = ow * stride_w - pad_w
        # One unsigned compare per axis checks both 0 <= ih and ih < H.
        ih = (ih0[:, None] + (kh * dil_h)[None, :]).to(tl.uint32, bitcast=True)
        iw = (iw0[:, None] + (kw * dil_w)[None, :]).to(tl.uint32, bitcast=True)
        x_mask = mask_r[:, None] & mask_n[None, :] & (ih < H) & (iw < W)
        b = tl.load(x_ptr + ((n * sxn + ih0 * sxh + iw0 * sxw)[:, None] + x_cols[None, :]),
                    mask=x_mask, other=0.0)
        if HAS_BIAS:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    # Partial slot `split`, laid out like the weight: (C_out, C_in_g, KH, KW).
    slot = split.to(tl.int64) * (C_out_g * groups) * KDIM
    col = ci * (KH * KW) + kh * KW + kw
    tl.store(dw_ptr + slot + co[:, None] * KDIM + col[None, :], acc,
             mask=mask_m[:, None] & mask_n[None, :])
    if HAS_BIAS:
        if pid_n == 0:
            tl.store(db_ptr + split * (C_out_g * groups) + co, bias_acc, mask=mask_m)


def _split_reduction(geometry: Conv2dGeometry, sm_count: int):
    """(SPLIT, R_PER_SPLIT): enough programs to fill ``sm_count`` multiprocessors twice, each
    reducing >= 512 rows."""
    g = geometry
    r = g.batch * g.out_h * g.out_w
    if INTERPRET:
        return 1, r
    tiles = cdiv(g.out_per_group, 64) * cdiv(g.in_per_group * g.kernel_h * g.kernel_w, 64) \
        * g.groups
    split = max(1, min(2 * sm_count // tiles, cdiv(r, 512)))
    per_split = cdiv(cdiv(r, split), 256) * 256
    return cdiv(r, per_split), per_split


def conv2d_weight_grad(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                       geometry: Conv2dGeometry, need_bias: bool = False):
    """(dw, db): dw shaped and laid out like ``weight`` (C_out, C_in/groups, KH, KW), db (C_out,)
    or None; from grad_output (N, C_out, OH, OW) and input (N, C_in, H, W)."""
    g = geometry
    partial_w, partial_b, grid, args = launch_arguments(grad_output, input, weight, g, need_bias)
    if grad_output.numel() == 0 or input.numel() == 0:
        partial_w.zero_()
        partial_b.zero_()
    else:
        conv2d_weight_grad_kernel[grid](**args)
    split = partial_w.shape[0]
    grad_weight = partial_w[0] if split == 1 else partial_w.sum(0)
    grad_weight = grad_weight.to(dtype=weight.dtype, memory_format=torch.preserve_format)
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        grad_weight = grad_weight.contiguous(memory_format=torch.channels_last)
    grad_bias = None
    if need_bias:
        grad_bias = (partial_b[0] if split == 1 else partial_b.sum(0)).to(weight.dtype)
    return grad_weight, grad_bias


def launch_arguments(grad_output, input, weight, geometry: Conv2dGeometry, need_bias=False,
                     sm_count=None):
    """Allocate the partial sums and name every kernel argument: (partial_w (SPLIT, *weight
    shape), partial_b (SPLIT, C_out) or partial_w, grid, args). Separate from the launch so the
    compile check builds exactly what a launch would. sm_count: the GPU's multiprocessors
    (default: those of input's device)."""
    g = geometry
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    split, per_split = _split_reduction(g, sm_count or multiprocessor_count(input.device))
    partial_w = torch.empty((split, *weight.shape), device=input.device, dtype=acc_dtype)
    partial_b = torch.empty((split, g.out_channels), device=input.device, dtype=acc_dtype) \
        if need_bias else partial_w
    kdim = g.in_per_group * g.kernel_h * g.kernel_w
    args = dict(
        dy_ptr=grad_output, x_ptr=input, dw_ptr=partial_w, db_ptr=partial_b,
        **dict(zip(("sdyn", "sdyc", "sdyh", "sdyw"), grad_output.stride(), strict=True)),
        **dict(zip(("sxn", "sxc", "sxh", "sxw"), input.stride(), strict=True)),
        N=g.batch, H=g.height, W=g.width, OH=g.out_h, OW=g.out_w, KH=g.kernel_h, KW=g.kernel_w,
        stride_h=g.stride[0], stride_w=g.stride[1], pad_h=g.padding[0], pad_w=g.padding[2],
        dil_h=g.dilation[0], dil_w=g.dilation[1], groups=g.groups, C_in_g=g.in_per_group,
        C_out_g=g.out_per_group, KDIM=kdim, SPLIT=split, R_PER_SPLIT=per_split,
        HAS_BIAS=need_bias, INDEX_64=needs_int64(grad_output, input),
        ACC_DTYPE=accumulator_dtype(input.dtype), INPUT_PRECISION=dot_precision(input.dtype),
        UPCAST=dot_upcast(input.dtype),
    )
    grid = lambda meta: (cdiv(g.out_per_group, meta["BLOCK_M"]), cdiv(kdim, meta["BLOCK_N"]),
                         g.groups * split)
    return partial_w, partial_b, grid, args


"""Conv2d input gradient as an implicit GEMM over dY, without a zero-inserted gradient.

Backward of y = conv2d(x, w) with respect to x:
    dx[n, g*Cg + ci, ih, iw] = sum_{co, kh, kw} dy[n, co, oh, ow] * w[co, ci, kh, kw]
        where oh = (ih + ph - kh*dh) / sh and ow = (iw + pw - kw*dw) / sw
        are whole numbers inside the output (otherwise the term is absent).
That is a convolution of dy with the flipped weight. GEMM view, per group: rows = N*H*W input
pixels, columns = C_in/groups, reduction K = KH*KW*(C_out/groups) in (kh, kw, co) order. For
stride > 1 the terms whose (ih + ph - kh*dh) is not a multiple of the stride are masked gathers
rather than multiplications by inserted zeros, so no dilated copy of dy is ever built.
"""
import torch
import triton
import triton.language as tl

from .configs import implicit_gemm_configs, interpreter_tiles
from .conv2d_geometry import Conv2dGeometry
from .runtime import accumulator_dtype, cdiv, dot_precision, dot_upcast, output_memory_format


@triton.autotune(
    configs=implicit_gemm_configs(),
    key=["N", "H", "W", "OH", "OW", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
         "C_in_g", "C_out_g", "groups"],
)
@interpreter_tiles(BLOCK_N="C_in_g", BLOCK_K="K")
@triton.jit
def conv2d_input_grad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    sdyn, sdyc, sdyh, sdyw,
    swo, swi, swh, sww,
    sdxn, sdxc, sdxh, sdxw,
    N, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, C_in_g, C_out_g, K,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    M = N * H * W

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < C_in_g
    iw = offs_m % W
    ih = (offs_m // W) % H
    n = offs_m // (W * H)
    dy_rows = dy_ptr + n.to(tl.int64) * sdyn + (group * C_out_g) * sdyc
    w_cols = w_ptr + (group * C_out_g).to(tl.int64) * swo + offs_n * swi

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        co = offs_k % C_out_g
        kw = (offs_k // C_out_g) % KW
        kh = offs_k // (C_out_g * KW)
        th = ih[:, None] + pad_h - (kh * dil_h)[None, :]
        tw = iw[:, None] + pad_w - (kw * dil_w)[None, :]
        oh = th // stride_h
        ow = tw // stride_w
        dy_mask = (mask_m[:, None] & mask_k[None, :] & (th >= 0) & (tw >= 0)
                   & (oh * stride_h == th) & (ow * stride_w == tw) & (oh < OH) & (ow < OW))
        a = tl.load(dy_rows[:, None] + co[None, :] * sdyc + oh * sdyh + ow * sdyw,
                    mask=dy_mask, other=0.0)
        b = tl.load(w_cols[None, :] + (co * swo + kh * swh + kw * sww)[:, None],
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    ci = group * C_in_g + offs_n
    dx_ptrs = (dx_ptr + n.to(tl.int64)[:, None] * sdxn + ci[None, :] * sdxc
               + (ih * sdxh + iw * sdxw)[:, None])
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def conv2d_input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input: torch.Tensor,
                      geometry: Conv2dGeometry) -> torch.Tensor:
    """dx: (N, C_in, H, W) in the input's memory format, from grad_output (N, C_out, OH, OW)
    and weight (C_out, C_in/groups, KH, KW); ``input`` only lends its shape and layout."""
    g = geometry
    grad_input = torch.empty(input.shape, device=input.device, dtype=input.dtype,
                             memory_format=output_memory_format(input, grad_output))
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()
    m = g.batch * g.height * g.width
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]), cdiv(g.in_per_group, meta["BLOCK_N"]),
                         g.groups)
    conv2d_input_grad_kernel[grid](
        grad_output, weight, grad_input,
        *grad_output.stride(), *weight.stride(), *grad_input.stride(),
        g.batch, g.height, g.width, g.out_h, g.out_w, g.kernel_h, g.kernel_w,
        g.stride[0], g.stride[1], g.padding[0], g.padding[2], g.dilation[0], g.dilation[1],
        g.groups, g.in_per_group, g.out_per_group, g.kernel_h * g.kernel_w * g.out_per_group,
        ACC_DTYPE=accumulator_dtype(input.dtype), INPUT_PRECISION=dot_precision(input.dtype),
        UPCAST=dot_upcast(input.dtype),
    )
    return grad_input

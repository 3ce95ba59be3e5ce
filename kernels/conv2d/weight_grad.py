"""Conv2d weight and bias gradients as a split-reduction GEMM over channels_last operands.

Backward of y = conv2d(x, w) + b with respect to w and b:
    dw[co, ci, kh, kw] = sum_{n, oh, ow} dy[n, co, oh, ow] * x[n, g*Cg + ci, oh*sh - ph + kh*dh,
                                                              ow*sw - pw + kw*dw]
    db[co]             = sum_{n, oh, ow} dy[n, co, oh, ow]
GEMM view, per group and tap (kh, kw): rows = C_out/groups, columns = C_in/groups, reduction
R = N*OH*OW. Both operands are read channels_last (the launcher converts NCHW once): a dy row
is a contiguous run of C_out values at r * C_out, an x row a contiguous run of channels, so
every tile row is one 16-byte-vector load. Each program owns one tap. Which input pixel a
reduction row r = (n, oh, ow) reads, and whether the tap lies inside x there, comes from a
row table built once per geometry on the host (``row_table``: the tap-(0, 0) pixel and one
in-bounds bit per tap), so the main loop does one table read and one bit test per tile row and
no index arithmetic; full steps run unmasked and a partial last step once after them. (Over
64 taps, or with 64-bit indices, r is instead carried across steps by adds and compares; no
division by a runtime size in the main loop either way.) With fewer than 16 input channels
per group a tap would fill under 16 columns, so the columns are then (kh, kw, ci) flattened,
decomposed once per program, and the padding mask is per element: the row's table bit of the
column's tap (the carried rows' bounds over 63 taps).

R is long and the output small, so R is split across SPLIT programs per output tile. Launch 1
writes each split's fp32 partial; launch 2 sums the partials in a fixed order (deterministic, no
atomics) and writes dw and db in the weight's own layout and dtype. With SPLIT == 1 the first
launch writes the final tensors itself: one launch.
The bias gradient has its own programs (one extra column tile) that sum dy with Kahan
compensation, so a long reduction (a bias followed by batch norm, whose gradient is zero in
exact arithmetic) keeps fp32's precision instead of growing with R.
"""
import functools

import torch
import triton
import triton.language as tl

from ..host_cache import device_table
from ..runtime import (
    INTERPRET,
    accumulator_dtype,
    cdiv,
    dot_precision,
    dot_upcast,
    multiprocessor_count,
    needs_int64,
    next_power_of_2,
    upcast_dot,
)
from ..verified_tuning import verified_autotune
from .configs import (
    TAP_MAJOR_MIN_CHANNELS,
    gemm_tile_configs,
    implicit_gemm_configs,
    interpreter_tiles,
)
from .geometry import Conv2dGeometry
from .layout import to_channels_last
from .references import weight_grad_reference

# (BLOCK_M output channels, BLOCK_N input channels or flattened taps, BLOCK_K reduction rows,
#  num_warps, num_stages). Every config fits sm_80's shared memory with fp32 operands.
WGRAD_TILES_GPU = [
    (64, 64, 64, 4, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (128, 128, 32, 8, 3),
    (64, 64, 32, 4, 4),
    (32, 64, 64, 4, 4),
    (64, 32, 64, 4, 4),
    (16, 64, 128, 4, 3),
    (32, 32, 128, 4, 3),
]
# The interpreter pays per program: tall reduction tiles, output tiles sized to the problem.
INTERPRET_BLOCK_K = 2048
# Spare zero entries at the end of each row of the row table (>= every BLOCK_K): the table
# read one step ahead of the last full step stays inside it.
TABLE_PAD = INTERPRET_BLOCK_K
TABLE_PAD_ = tl.constexpr(TABLE_PAD)  # the same, readable inside a kernel
# The reduction of the partial slots: slots per step, output elements per program.
REDUCE_BLOCK_S, REDUCE_BLOCK_E = 8, 512


def _columns(args) -> int:
    """Output columns one tap's GEMM (tap-major) or the whole flattened K has."""
    return args["C_in_g"] if args["TAP_MAJOR"] else args["C_in_g"] * args["KH"] * args["KW"]


# fp32 without TF32 multiplies on the FMA units, with tiles of their own that do not spill
# there (sm_80 and sm_90, ``python -m benchmarks.static``; 64x64 over 4 warps
# spills 808 B on sm_80).
FP32_IEEE_TILES = [(64, 64, 32, 8, 3), (64, 128, 32, 4, 4), (128, 128, 32, 8, 3)]


def _prune(configs, named_args, **kwargs):
    """Drop tiles more than one power of two wider than C_out/groups or the columns: they
    would only compute padding; fp32 without TF32 tunes FP32_IEEE_TILES instead (unless
    autotuning is off). Keeps at least the narrowest config."""
    args = dict(named_args, **kwargs)
    rows = max(16, next_power_of_2(args["C_out_g"]))
    cols = max(16, next_power_of_2(_columns(args)))
    if args["INPUT_PRECISION"] == "ieee" and args["x_ptr"].dtype == torch.float32 \
            and not INTERPRET and len(configs) > 1:
        configs = gemm_tile_configs(FP32_IEEE_TILES)
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= rows and c.kwargs["BLOCK_N"] <= cols]
    if not kept:
        kept = [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"]))]
    return kept


@triton.jit
def _rows_at(offs_r, H, W, OH, OW, stride_h, stride_w, dh_row, dw_row):
    """(ih, iw, pixel) of reduction rows offs_r = (n, oh, ow): ih = oh*sh + dh_row,
    iw = ow*sw + dw_row, pixel n*H*W + ih*W + iw of x (may lie outside x when padded)."""
    ow = offs_r % OW
    oh = (offs_r // OW) % OH
    n = offs_r // (OW * OH)
    ih = oh * stride_h + dh_row
    iw = ow * stride_w + dw_row
    return ih, iw, n * (H * W) + ih * W + iw


@triton.jit
def _accumulate_step(acc, dy_ptrs, x_ptr, x_cols, x_pix, sxp, ih, iw, rows_left,
                     H, W, dh, dwo, TAP_MAJOR: tl.constexpr, CHECK_R: tl.constexpr,
                     INDEX_64: tl.constexpr, UPCAST: tl.constexpr,
                     INPUT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += dy^T tile @ x tile for BLOCK_K reduction rows; CHECK_R: mask the rows past the
    ``rows_left`` still to do (a partial last step)."""
    if CHECK_R:
        # A fixed row index against a scalar: no row counter carried through the loop.
        a = tl.load(dy_ptrs, mask=(tl.arange(0, BLOCK_K) < rows_left)[None, :], other=0.0)
    else:
        a = tl.load(dy_ptrs)
    # x offsets as pixel * pixel stride: the multiply by the (specialised) channel count is
    # what lets the compiler prove 16-byte alignment of each row.
    x_rows = (x_pix.to(tl.int64) if INDEX_64 else x_pix) * sxp
    if TAP_MAJOR:
        # One tap: the padding check is one unsigned compare per axis and tile row.
        ok = (ih.to(tl.uint32, bitcast=True) < H) & (iw.to(tl.uint32, bitcast=True) < W)
        if CHECK_R:
            ok = ok & (tl.arange(0, BLOCK_K) < rows_left)
        b = tl.load(x_ptr + (x_rows[:, None] + x_cols[None, :]), mask=ok[:, None], other=0.0)
    else:
        ih2 = (ih[:, None] + dh[None, :]).to(tl.uint32, bitcast=True)
        iw2 = (iw[:, None] + dwo[None, :]).to(tl.uint32, bitcast=True)
        ok = (ih2 < H) & (iw2 < W)
        if CHECK_R:
            ok = ok & (tl.arange(0, BLOCK_K) < rows_left)[:, None]
        b = tl.load(x_ptr + (x_rows[:, None] + x_cols[None, :]), mask=ok, other=0.0)
    return upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)


@triton.jit
def _reduce_rows(acc, r_begin, r_end, dy_ptr, x_ptr, x_cols, co_load, sdyr, sxp,
                 H, W, OH, OW, stride_h, stride_w, dh, dwo, dh_row, dw_row,
                 TAP_MAJOR: tl.constexpr, CHECK_R: tl.constexpr, INDEX_64: tl.constexpr,
                 UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += the GEMM over reduction rows [r_begin, r_end), BLOCK_K per step. The rows
    r = (n, oh, ow) are held as the tap's input row/column ih, iw (of kh = kw = 0 for flattened
    columns: dh_row = dw_row = 0) and input pixel; decomposed once here, then carried by adds
    and compares. CHECK_R: the last step may be partial (masked)."""
    offs_r = r_begin + tl.arange(0, BLOCK_K)
    ih, iw, x_pix = _rows_at(offs_r, H, W, OH, OW, stride_h, stride_w, dh_row, dw_row)
    offs_rk = r_begin + tl.arange(0, BLOCK_K)
    dy_ptrs = dy_ptr + co_load[:, None] \
        + (offs_rk.to(tl.int64) if INDEX_64 else offs_rk)[None, :] * sdyr
    # What BLOCK_K rows add to (ih, iw, pixel), and the carries past an output row or image.
    step_ow = BLOCK_K % OW
    step_oh = (BLOCK_K // OW) % OH
    step_n = BLOCK_K // (OW * OH)
    d_iw = step_ow * stride_w
    d_ih = step_oh * stride_h
    d_pix = step_n * (H * W) + d_ih * W + d_iw
    iw_end = OW * stride_w + dw_row
    ih_end = OH * stride_h + dh_row
    wrap_w_pix = stride_h * W - OW * stride_w
    wrap_h_pix = H * W - OH * stride_h * W
    for r0 in range(r_begin, r_end, BLOCK_K):
        acc = _accumulate_step(acc, dy_ptrs, x_ptr, x_cols, x_pix, sxp, ih, iw, r_end - r0,
                               H, W, dh, dwo, TAP_MAJOR, CHECK_R, INDEX_64, UPCAST,
                               INPUT_PRECISION, BLOCK_K)
        dy_ptrs += BLOCK_K * sdyr
        iw += d_iw
        ih += d_ih
        x_pix += d_pix
        wrap = iw >= iw_end
        iw = tl.where(wrap, iw - OW * stride_w, iw)
        ih = tl.where(wrap, ih + stride_h, ih)
        x_pix = tl.where(wrap, x_pix + wrap_w_pix, x_pix)
        wrap = ih >= ih_end
        ih = tl.where(wrap, ih - OH * stride_h, ih)
        x_pix = tl.where(wrap, x_pix + wrap_h_pix, x_pix)
    return acc


@triton.jit
def _table_step(acc, dy_ptrs, x_ptr, pix, bits, bits_hi, x_cols, sxp, tap, tap_hi, live,
                TAP_MAJOR: tl.constexpr, WIDE: tl.constexpr, CHECK_R: tl.constexpr,
                UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc += dy^T tile @ x tile for BLOCK_K rows with table entries (pix, tap bits); tap: the
    program's tap bit in ``bits`` (TAP_MAJOR) or each column's tap index mod 32, in ``bits_hi``
    where tap_hi (WIDE: over 32 taps); CHECK_R: only the ``live`` rows are real."""
    if TAP_MAJOR:
        ok = ((bits & tap) != 0)[:, None]
    else:
        word = bits[:, None]
        if WIDE:
            word = tl.where(tap_hi[None, :], bits_hi[:, None], word)
        ok = ((word >> tap[None, :]) & 1) != 0
    if CHECK_R:
        ok = ok & live[:, None]
        a = tl.load(dy_ptrs, mask=live[None, :], other=0.0)
    else:
        a = tl.load(dy_ptrs)
    b = tl.load(x_ptr + ((pix * sxp)[:, None] + x_cols[None, :]), mask=ok, other=0.0)
    return upcast_dot(a, b, acc, UPCAST, INPUT_PRECISION)


@triton.jit
def _reduce_rows_table(acc, r_begin, r_end, dy_ptr, x_ptr, table_ptr, table_stride, bits_row,
                       x_cols, co_load, sdyr, sxp, tap, tap_hi, TAP_MAJOR: tl.constexpr,
                       WIDE: tl.constexpr, UPCAST: tl.constexpr,
                       INPUT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += the GEMM over reduction rows [r_begin, r_end) of one tap, BLOCK_K per step, each
    row's input pixel and in-bounds taps read from the row table (``row_table``; its tap-bit
    row ``bits_row``, and the next one too when WIDE): per step and row one table read and one
    bit test, no index arithmetic. The full steps run unmasked; a partial last step runs once
    after them. Each step's table entries are read a step ahead into registers: read in the
    step that uses them, the compiler stages them through the operands' async-copy pipeline,
    whose waits then drain it every step."""
    offs_k = tl.arange(0, BLOCK_K)
    # Fixed tile pointers plus a scalar offset per step: nothing per row is carried.
    dy_tile = dy_ptr + co_load[:, None] + offs_k[None, :] * sdyr
    row_tile = table_ptr + offs_k
    bits_offset = bits_row * table_stride
    r_full = r_begin + (r_end - r_begin) // BLOCK_K * BLOCK_K
    # Read one step ahead; the TABLE_PAD spare entries keep the last read inside the table.
    pix = tl.load(row_tile + r_begin)
    bits = tl.load(row_tile + r_begin + bits_offset)
    bits_hi = tl.load(row_tile + r_begin + bits_offset + table_stride) if WIDE else bits
    for r0 in range(r_begin, r_full, BLOCK_K):
        acc = _table_step(acc, dy_tile + r0 * sdyr, x_ptr, pix, bits, bits_hi, x_cols, sxp,
                          tap, tap_hi, offs_k, TAP_MAJOR, WIDE, False, UPCAST, INPUT_PRECISION)
        pix = tl.load(row_tile + (r0 + BLOCK_K))
        bits = tl.load(row_tile + (r0 + BLOCK_K + bits_offset))
        if WIDE:
            bits_hi = tl.load(row_tile + (r0 + BLOCK_K + bits_offset + table_stride))
    live = offs_k < r_end - r_full
    if r_full < r_end:
        acc = _table_step(acc, dy_tile + r_full * sdyr, x_ptr, pix, bits, bits_hi, x_cols, sxp,
                          tap, tap_hi, live, TAP_MAJOR, WIDE, True, UPCAST, INPUT_PRECISION)
    return acc


@verified_autotune(
    configs=implicit_gemm_configs({"BLOCK_K": INTERPRET_BLOCK_K}, WGRAD_TILES_GPU),
    # No raw batch or image size: R is bucketed by powers of two, so a last partial batch or
    # another eval batch reuses the tuned tile.
    key=["R_BUCKET", "C_in_g", "C_out_g", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
         "groups", "HAS_BIAS", "TAP_MAJOR", "ROW_TABLE", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
)
@interpreter_tiles(BLOCK_M="C_out_g", BLOCK_N=_columns)
@triton.jit(do_not_specialize=["N", "SPLIT", "R_PER_SPLIT", "R_BUCKET"])
def conv2d_weight_grad_kernel(
    # pointers
    dy_ptr, x_ptr, dw_ptr, db_ptr, table_ptr,
    # strides
    sdyr, sxp,
    sws, swo, swi, swh, sww, sbs,
    # sizes, the convolution's geometry and the split of the reduction
    N, H, W, OH, OW, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, C_in_g, C_out_g,
    SPLIT, R_PER_SPLIT, R_BUCKET,
    # meta-parameters
    TAP_MAJOR: tl.constexpr, ROW_TABLE: tl.constexpr, WIDE_TAPS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    # tiles
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dy: (R, C_out) rows of stride sdyr (channels_last); x channels_last (channel stride 1);
    dw[split] at dw_ptr + split*sws with strides (swo, swi, swh, sww); db[split] at split*sbs.
    ROW_TABLE: table_ptr holds ``row_table``'s (3, R + TABLE_PAD) int32; WIDE_TAPS: KH*KW > 32
    (flattened columns then read both tap-bit rows)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2) % SPLIT
    group = tl.program_id(2) // SPLIT
    R = N * OH * OW
    r_start = split * R_PER_SPLIT
    r_end = tl.minimum(R, r_start + R_PER_SPLIT)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < C_out_g
    co = group * C_out_g + offs_m
    if TAP_MAJOR:
        ci_tiles = tl.cdiv(C_in_g, BLOCK_N)
        gemm_tiles = KH * KW * ci_tiles
    else:
        gemm_tiles = tl.cdiv(KH * KW * C_in_g, BLOCK_N)

    if pid_n < gemm_tiles:
        # Columns: tap-major, one tap and a block of its channels; else (kh, kw, ci) flattened.
        if TAP_MAJOR:
            tap = pid_n // ci_tiles
            ci = (pid_n % ci_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
            mask_n = ci < C_in_g
            kh = tap // KW
            kw = tap % KW
        else:
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            mask_n = offs_n < KH * KW * C_in_g
            ci = offs_n % C_in_g
            kw = (offs_n // C_in_g) % KW
            kh = offs_n // (C_in_g * KW)
        dh = kh * dil_h - pad_h  # tap offset of the input row/column from oh*sh, ow*sw
        dwo = kw * dil_w - pad_w
        x_cols = group * C_in_g + ci % C_in_g
        co_load = group * C_out_g + offs_m % C_out_g
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        if ROW_TABLE:
            # The table gives each row its tap-(0, 0) pixel (padding included); the tap's
            # shift from it joins the columns.
            x_cols += (kh * dil_h * W + kw * dil_w) * sxp
            if TAP_MAJOR:
                tap_index = kh * KW + kw
                bits_row = 1 + tap_index // 32  # taps 0-31 in table row 1, 32-63 in row 2
                tap = 1 << (tap_index % 32)  # the program's tap's bit
            else:
                # Each column's tap index; padding columns test the last bit, never set (the
                # launcher keeps KH*KW below 32, or 64 when WIDE).
                tap_index = tl.where(mask_n, kh * KW + kw, 63 if WIDE_TAPS else 31)
                bits_row = 1
                tap = tap_index % 32
            acc = _reduce_rows_table(acc, r_start, r_end, dy_ptr, x_ptr, table_ptr,
                                     N * OH * OW + TABLE_PAD_, bits_row, x_cols, co_load, sdyr,
                                     sxp, tap, tap_index >= 32, TAP_MAJOR, WIDE_TAPS, UPCAST,
                                     INPUT_PRECISION, BLOCK_K)
        else:
            if not TAP_MAJOR:
                x_cols += (dh * W + dwo) * sxp
            if TAP_MAJOR:
                dh_row = dh
                dw_row = dwo
            else:
                dh_row = 0
                dw_row = 0
            acc = _reduce_rows(acc, r_start, r_end, dy_ptr, x_ptr, x_cols, co_load, sdyr, sxp,
                               H, W, OH, OW, stride_h, stride_w, dh, dwo, dh_row, dw_row,
                               TAP_MAJOR, True, INDEX_64, UPCAST, INPUT_PRECISION, BLOCK_K)

        dst = dw_ptr + split.to(tl.int64) * sws + co[:, None] * swo \
            + (ci * swi + kh * swh + kw * sww)[None, :]
        tl.store(dst, acc.to(dw_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    elif HAS_BIAS:
        # The bias column: db[co] = sum_r dy[r, co], Kahan-compensated per tile element, the
        # tile's lanes and the splits then summed in float64 (a few values per channel).
        offs_rb = r_start + tl.arange(0, BLOCK_K)
        bias_rows = offs_rb.to(tl.int64) if INDEX_64 else offs_rb
        bias_ptrs = dy_ptr + co[:, None] + bias_rows[None, :] * sdyr
        total = tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC_DTYPE)
        comp = tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC_DTYPE)
        for _r0 in range(r_start, r_end, BLOCK_K):
            v = tl.load(bias_ptrs, mask=mask_m[:, None] & (offs_rb < r_end)[None, :], other=0.0)
            y = v.to(ACC_DTYPE) - comp
            t = total + y
            comp = (t - total) - y
            total = t
            bias_ptrs += BLOCK_K * sdyr
            offs_rb += BLOCK_K
        db = tl.sum(total.to(tl.float64) - comp.to(tl.float64), axis=1)
        if db_ptr.dtype.element_ty != tl.float64:
            db = db.to(ACC_DTYPE)  # the interpreter has no float64 -> bfloat16 cast
        tl.store(db_ptr + split * sbs + co, db.to(db_ptr.dtype.element_ty), mask=mask_m)


@triton.jit(do_not_specialize=["SPLIT"])
def conv2d_weight_grad_reduce_kernel(
    # pointers
    pw_ptr, pb_ptr, dw_ptr, db_ptr,
    # strides
    swo, swi, swh, sww,
    # sizes
    SPLIT, C_out, C_in_g, KH, KW,
    # meta-parameters
    HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    # tiles
    BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Sum the partial slots in a fixed order and write dw (db) in the weight's layout/dtype.
    pw: (SPLIT, C_out, KH, KW, C_in_g) contiguous fp32 (fp64 for fp64); pb: (SPLIT, C_out)
    fp64."""
    pid = tl.program_id(0)
    E = C_out * KH * KW * C_in_g
    w_programs = tl.cdiv(E, BLOCK_E)
    offs_s = tl.arange(0, BLOCK_S)
    if pid < w_programs:
        offs_e = pid * BLOCK_E + tl.arange(0, BLOCK_E)
        mask_e = offs_e < E
        acc = tl.zeros((BLOCK_E,), dtype=ACC_DTYPE)
        for s0 in range(0, SPLIT, BLOCK_S):
            s = s0 + offs_s
            part = tl.load(pw_ptr + s.to(tl.int64)[:, None] * E + offs_e[None, :],
                           mask=(s < SPLIT)[:, None] & mask_e[None, :], other=0.0)
            acc += tl.sum(part, axis=0)
        ci = offs_e % C_in_g
        kw = (offs_e // C_in_g) % KW
        kh = (offs_e // (C_in_g * KW)) % KH
        co = offs_e // (C_in_g * KW * KH)
        tl.store(dw_ptr + co * swo + ci * swi + kh * swh + kw * sww,
                 acc.to(dw_ptr.dtype.element_ty), mask=mask_e)
    elif HAS_BIAS:
        offs_c = (pid - w_programs) * BLOCK_E + tl.arange(0, BLOCK_E)
        mask_c = offs_c < C_out
        bias_acc = tl.zeros((BLOCK_E,), dtype=tl.float64)
        for s0 in range(0, SPLIT, BLOCK_S):
            s = s0 + offs_s
            bias_part = tl.load(pb_ptr + s[:, None] * C_out + offs_c[None, :],
                                mask=(s < SPLIT)[:, None] & mask_c[None, :], other=0.0)
            bias_acc += tl.sum(bias_part, axis=0)
        # Through ACC_DTYPE: the interpreter has no float64 -> bfloat16 cast.
        tl.store(db_ptr + offs_c, bias_acc.to(ACC_DTYPE).to(db_ptr.dtype.element_ty),
                 mask=mask_c)


@device_table(maxsize=16)
def row_table(batch, height, width, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h,
              dil_w, kernel_h, kernel_w, device) -> torch.Tensor:
    """The reduction rows' table, int32 (3, R + TABLE_PAD) with R = batch*out_h*out_w, rows
    r = (n, oh, ow) (then TABLE_PAD zeros):
    [0, r] the input pixel n*H*W + ih0*W + iw0 that tap (0, 0) of output pixel r reads, with
    ih0 = oh*sh - ph, iw0 = ow*sw - pw (outside x when padded); [1, r] bit t = kh*KW + kw set
    when tap (kh, kw) of r lies inside x, for t < 32, and [2, r] bit t - 32 for 32 <= t < 64
    (KH*KW <= 64). Depends on the geometry only (cached)."""
    r = torch.arange(batch * out_h * out_w, device=device, dtype=torch.int64)
    ow, oh, n = r % out_w, (r // out_w) % out_h, r // (out_w * out_h)
    ih0, iw0 = oh * stride_h - pad_h, ow * stride_w - pad_w
    bits = torch.zeros_like(r)
    for kh in range(kernel_h):
        for kw in range(kernel_w):
            ih, iw = ih0 + kh * dil_h, iw0 + kw * dil_w
            inside = (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
            bits |= inside.to(torch.int64) << (kh * kernel_w + kw)
    table = torch.zeros((3, r.numel() + TABLE_PAD), device=device, dtype=torch.int32)
    table[0, :r.numel()] = n * height * width + ih0 * width + iw0
    for row, word in ((1, bits & 0xFFFFFFFF), (2, bits >> 32)):  # bits of taps 0-31, 32-63
        table[row, :r.numel()] = torch.where(word >= 2**31, word - 2**32, word)  # int32 view
    return table


def split_reduction(geometry: Conv2dGeometry, sm_count: int):
    """(SPLIT, R_PER_SPLIT): enough programs to fill ``sm_count`` multiprocessors twice, each
    reducing >= 512 rows; one slot under the interpreter."""
    g = geometry
    r = max(1, g.batch * g.out_h * g.out_w)
    if INTERPRET:
        return 1, r
    tiles = cdiv(g.out_per_group, 64) * cdiv(g.in_per_group * g.kernel_h * g.kernel_w, 64) \
        * g.groups
    split = max(1, min(2 * sm_count // tiles, cdiv(r, 512)))
    per_split = cdiv(cdiv(r, split), 256) * 256
    return cdiv(r, per_split), per_split


def weight_grad_layout(weight: torch.Tensor) -> torch.memory_format:
    """The memory format dw is written in: the weight's (channels_last or contiguous)."""
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def empty_weight_grads(weight: torch.Tensor, need_bias: bool):
    """(grad_weight, grad_bias or None) to write: dw in the weight's shape, layout
    (``weight_grad_layout``) and dtype, db (C_out,) in its dtype."""
    grad_weight = torch.empty(weight.shape, device=weight.device, dtype=weight.dtype,
                              memory_format=weight_grad_layout(weight))
    grad_bias = torch.empty((weight.shape[0],), device=weight.device, dtype=weight.dtype) \
        if need_bias else None
    return grad_weight, grad_bias


def partial_sum_launch(partial_w, partial_b, grad_weight, grad_bias, geometry: Conv2dGeometry,
                       split: int, dtype: torch.dtype):
    """(kernel, grid, args) of the launch that sums ``split`` partial slots, partial_w
    (split, C_out, KH, KW, C_in/groups) and partial_b (split, C_out) or None, in a fixed order
    into grad_weight and grad_bias (or None); dtype: the input's."""
    g = geometry
    elements = g.out_channels * g.kernel_h * g.kernel_w * g.in_per_group
    has_bias = grad_bias is not None
    programs = cdiv(elements, REDUCE_BLOCK_E) \
        + (cdiv(g.out_channels, REDUCE_BLOCK_E) if has_bias else 0)
    args = dict(
        pw_ptr=partial_w, pb_ptr=partial_w if partial_b is None else partial_b,
        dw_ptr=grad_weight, db_ptr=grad_bias if has_bias else grad_weight,
        **dict(zip(("swo", "swi", "swh", "sww"), grad_weight.stride(), strict=True)),
        SPLIT=split, C_out=g.out_channels, C_in_g=g.in_per_group, KH=g.kernel_h,
        KW=g.kernel_w, HAS_BIAS=has_bias, ACC_DTYPE=accumulator_dtype(dtype),
        BLOCK_S=REDUCE_BLOCK_S, BLOCK_E=REDUCE_BLOCK_E,
    )
    return conv2d_weight_grad_reduce_kernel, (programs,), args


def conv2d_weight_grad(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                       geometry: Conv2dGeometry, need_bias: bool = False):
    """(dw, db): dw shaped and laid out like ``weight`` (C_out, C_in/groups, KH, KW) in its
    dtype, db (C_out,) or None; from grad_output (N, C_out, OH, OW) and input (N, C_in, H, W).
    At most two launches: the split GEMM, then the fixed-order sum of its partial slots."""
    return run_weight_grad(*launch_arguments(grad_output, input, weight, geometry, need_bias),
                           empty=grad_output.numel() == 0 or input.numel() == 0,
                           reference=functools.partial(weight_grad_reference, grad_output,
                                                       input, weight, geometry, need_bias))


def run_weight_grad(grad_weight, grad_bias, launches, *, empty: bool, reference=None):
    """Run a weight gradient's launches (``launch_arguments``' or the depthwise one's) and
    return (grad_weight, grad_bias); an empty reduction is zeros, with no launch. reference:
    the tuned first launch's (``cnn.kernels.conv2d.references``)."""
    if empty:
        grad_weight.zero_()
        if grad_bias is not None:
            grad_bias.zero_()
        return grad_weight, grad_bias
    (kernel, grid, args), *rest = launches
    kernel[grid](**args, reference=reference)
    for kernel, grid, args in rest:
        kernel[grid](**args)
    return grad_weight, grad_bias


def launch_arguments(grad_output, input, weight, geometry: Conv2dGeometry, need_bias=False,
                     sm_count=None, split=None):
    """Allocate the outputs and name every argument of each launch:
    (grad_weight, grad_bias or None, [(kernel, grid, args), ...]), the GEMM first and, when the
    reduction is split, the sum of its partial slots second. The operands in the args are the
    channels_last tensors the kernel reads (converted here when the caller's are not).
    Separate from the launch so the compile check builds exactly what a launch would.
    sm_count: the GPU's multiprocessors (default: those of input's device); split: force that
    many partial slots (tests), default sized to fill the GPU."""
    g = geometry
    dy = to_channels_last(grad_output)
    x = to_channels_last(input)
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    if split is None:
        split, per_split = split_reduction(g, sm_count or multiprocessor_count(input.device))
    else:
        per_split = cdiv(max(1, g.batch * g.out_h * g.out_w), split)
    grad_weight, grad_bias = empty_weight_grads(weight, need_bias)
    if split == 1:  # the GEMM writes the results itself
        out_w, out_b = grad_weight, grad_bias if need_bias else grad_weight
        sws, sbs = 0, 0
        w_strides = grad_weight.stride()
    else:
        out_w = torch.empty((split, g.out_channels, g.kernel_h, g.kernel_w, g.in_per_group),
                            device=input.device, dtype=acc_dtype)
        out_b = torch.empty((split, g.out_channels), device=input.device,
                            dtype=torch.float64) if need_bias else out_w
        sws, sbs = out_w.stride(0), out_b.stride(0)
        _, so, sh, sw, si = out_w.stride()
        w_strides = (so, si, sh, sw)
    r = g.batch * g.out_h * g.out_w
    tap_major = g.in_per_group >= TAP_MAJOR_MIN_CHANNELS
    index_64 = needs_int64(dy, x)
    # Flattened columns need one bit to spare (the last one marks the padding columns).
    taps = g.kernel_h * g.kernel_w
    use_table = taps <= (64 if tap_major else 63) and not index_64 and r > 0
    table = row_table(g.batch, g.height, g.width, g.out_h, g.out_w, *g.stride, g.padding[0],
                      g.padding[2], *g.dilation, g.kernel_h, g.kernel_w, x.device) \
        if use_table else out_w  # out_w stands in for the absent table; never read then
    args = dict(
        dy_ptr=dy, x_ptr=x, dw_ptr=out_w, db_ptr=out_b, table_ptr=table,
        # Dense channels_last: a dy row (n, oh, ow) is C_out apart, an x pixel C_in.
        sdyr=g.out_channels, sxp=g.in_channels,
        sws=sws, **dict(zip(("swo", "swi", "swh", "sww"), w_strides, strict=True)), sbs=sbs,
        N=g.batch, H=g.height, W=g.width, OH=g.out_h, OW=g.out_w, KH=g.kernel_h, KW=g.kernel_w,
        stride_h=g.stride[0], stride_w=g.stride[1], pad_h=g.padding[0], pad_w=g.padding[2],
        dil_h=g.dilation[0], dil_w=g.dilation[1], groups=g.groups, C_in_g=g.in_per_group,
        C_out_g=g.out_per_group, SPLIT=split, R_PER_SPLIT=per_split,
        R_BUCKET=next_power_of_2(r), TAP_MAJOR=tap_major, ROW_TABLE=use_table,
        WIDE_TAPS=taps > 32,
        HAS_BIAS=need_bias, INDEX_64=index_64, ACC_DTYPE=accumulator_dtype(input.dtype),
        INPUT_PRECISION=dot_precision(input.dtype), UPCAST=dot_upcast(input.dtype),
    )

    def grid(meta):
        if tap_major:
            columns = g.kernel_h * g.kernel_w * cdiv(g.in_per_group, meta["BLOCK_N"])
        else:
            columns = cdiv(g.kernel_h * g.kernel_w * g.in_per_group, meta["BLOCK_N"])
        return (cdiv(g.out_per_group, meta["BLOCK_M"]), columns + need_bias, g.groups * split)

    launches = [(conv2d_weight_grad_kernel, grid, args)]
    if split > 1:
        launches.append(partial_sum_launch(out_w, out_b, grad_weight, grad_bias, g, split,
                                           input.dtype))
    return grad_weight, grad_bias, launches

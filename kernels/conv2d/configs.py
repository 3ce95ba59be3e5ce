"""Autotuning configs, one small factory per kernel family.

Under the interpreter a single config is used, with tiles sized to the problem: the
interpreter's cost is per program instance and per element loaded, so tall row tiles and
column/reduction tiles no wider than the problem needs run fastest there, and autotuning would
only waste time. Every GPU config here fits sm_80's shared memory for fp32 operands
(``python -m benchmarks.static`` proves it).

``CNN_AUTOTUNE=0`` keeps only the first GPU config of each kernel: no tuning runs and one
compile per shape. It is for correctness runs on a GPU (the GPU check's tests), where the tile
does not change the result and ``tests/kernels/test_conv2d_gpu_tiles.py`` runs every tile.
With tuning on, the conv kernels' autotuners are verified ones (``cnn.kernels.verified_tuning``):
a new key's candidates are first checked against torch, and one that disagrees is dropped for
that key with a warning (``CNN_VERIFY_TUNING=0`` skips the check).
"""
import os

import triton
import triton.language as tl

from ..runtime import INTERPRET

AUTOTUNE = os.environ.get("CNN_AUTOTUNE", "1") != "0"

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
IMPLICIT_GEMM_TILES_GPU = [
    (128, 128, 32, 8, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    # The same tiles over 8 warps: half the registers per thread, for the NCHW output's
    # epilogue, whose element-wise stores hold a pointer per element and spill with 4 warps
    # (``python -m benchmarks.static``); a channels_last output stores 16-byte
    # vectors.
    (128, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (64, 64, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 64, 4, 3),
    (32, 64, 64, 4, 3),
    (256, 64, 32, 8, 3),
]
INTERPRET_BLOCK_M = 2048
# The channels per group from which a loop runs tap-major: one tap's channels then fill
# tl.dot's smallest tile (16) along the reduction (forward, input gradient) or the columns
# (weight gradient).
TAP_MAJOR_MIN_CHANNELS = 16
# The largest BLOCK_K of the forward and input gradient (GPU tiles and ``interpreter_tiles``'
# fit): their flattened loops' tables are padded to a multiple of it, so a last partial step
# reads inside them.
K_TABLE_PAD = 64
K_TABLE_PAD_ = tl.constexpr(K_TABLE_PAD)  # the same, readable inside a kernel


def autotuned(configs: list) -> list:
    """The configs to autotune over: all, or only the first with ``CNN_AUTOTUNE=0``."""
    return configs if AUTOTUNE else configs[:1]


def gemm_tile_configs(tiles) -> list:
    """triton.Configs of (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) tuples."""
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w,
                          num_stages=s) for bm, bn, bk, w, s in tiles]


def implicit_gemm_configs(interpret_tiles=None, gpu_tiles=IMPLICIT_GEMM_TILES_GPU):
    """Tiles for the implicit-GEMM convolutions (forward, input grad, weight grad).

    interpret_tiles: the fixed tiles under the interpreter (default: a tall BLOCK_M); the
    other tiles then come from ``interpreter_tiles``. gpu_tiles: the (BLOCK_M, BLOCK_N,
    BLOCK_K, num_warps, num_stages) tiles to autotune over on a GPU.
    """
    if INTERPRET:
        tiles = interpret_tiles or {"BLOCK_M": INTERPRET_BLOCK_M}
        return [triton.Config(dict(tiles), num_warps=4, num_stages=1)]
    return autotuned(gemm_tile_configs(gpu_tiles))


def _fit(n: int, low: int = 16, high: int = 64) -> int:
    return min(high, max(low, triton.next_power_of_2(int(n))))


def interpreter_tiles(**tile_args):
    """Under the interpreter, size each named tile from a kernel argument, e.g.
    ``interpreter_tiles(BLOCK_N="C_out_g")``: the next power of two in [16, 64]. A callable
    instead of a name gets the kernel's arguments and returns the size to fit."""
    def size(args, arg):
        return _fit(arg(args) if callable(arg) else args[arg])

    def decorate(kernel):
        if not INTERPRET:
            return kernel
        return triton.heuristics({
            tile: (lambda args, arg=arg: size(args, arg)) for tile, arg in tile_args.items()
        })(kernel)
    return decorate


def k_span(args) -> int:
    """The reduction span one tile of the forward or input gradient walks: a channel block
    tap-major, else the whole flattened K (``args``: the kernel's arguments by name)."""
    return args["C_BLOCK"] if args["TAP_MAJOR"] else args["K"]


def m_bucket(m: int) -> int:
    """The GEMM row count rounded up to a power of two: the autotuning key for M, so a new
    batch size (the last partial batch, the evaluation batch) reuses the tuned tile."""
    return triton.next_power_of_2(max(1, int(m)))


def prune_gemm_tiles(configs, n_cols: int, k_span: int, element_size: int = 2,
                     async_copies: bool = True):
    """The configs with tiles no wider than the problem: BLOCK_N clamped to the output columns
    and BLOCK_K to the reduction span one tile walks (channels per tap, or the whole K), each
    rounded up to a power of two of at least 16; duplicates dropped, order kept. Runs before
    autotuning, so a 64-channel layer does not time 128-wide tiles that compute zeros.

    With ``async_copies`` (both operand tiles are 16-byte async copies: the tap-major loops), a
    narrowed tile keeps at least one 16-byte copy per thread for each operand: its warps are
    halved (down to 4) while the smaller operand tile, BLOCK_K x min(BLOCK_M, BLOCK_N)
    elements of ``element_size`` bytes, has fewer 16-byte chunks than the threads (a 32x32
    fp16 tile over 8 warps would load by 8-byte copies). Gathered tiles keep their warps,
    which share the per-element gathers."""
    kept, seen = [], set()
    for cfg in configs:
        kw = dict(cfg.kwargs)
        for tile, size in (("BLOCK_N", n_cols), ("BLOCK_K", k_span)):
            if tile in kw:
                kw[tile] = min(kw[tile], max(16, triton.next_power_of_2(int(size))))
        warps = cfg.num_warps
        if async_copies and {"BLOCK_M", "BLOCK_N", "BLOCK_K"} <= set(kw):
            chunks = min(kw["BLOCK_M"], kw["BLOCK_N"]) * kw["BLOCK_K"] * element_size // 16
            while warps > 4 and chunks < 32 * warps:
                warps //= 2
        sig = (tuple(sorted(kw.items())), warps, cfg.num_stages)
        if sig in seen:
            continue
        seen.add(sig)
        kept.append(triton.Config(kw, num_warps=warps, num_stages=cfg.num_stages))
    return kept


def prune_implicit_gemm(configs, args: dict, columns: str, operand: str):
    """``prune_gemm_tiles`` for the forward or the input gradient: BLOCK_N clamped to the
    argument ``columns``, BLOCK_K to ``k_span``, 16-byte async copies when tap-major, operand
    elements the size of argument ``operand``'s (``args``: the kernel's arguments by name)."""
    return prune_gemm_tiles(configs, args[columns], k_span(args), args[operand].element_size(),
                            async_copies=args["TAP_MAJOR"])


def channel_block(channels: int) -> tuple:
    """(C_BLOCK, EVEN_C) of a tap-major loop over ``channels`` per group: the widest channel
    block (a power of two in [16, 64]) and whether it divides the channels, so that any
    min(BLOCK_K, C_BLOCK) block does and no channel mask is needed."""
    if channels % 16 == 0:
        block = 16
        while block < 64 and channels % (2 * block) == 0:
            block *= 2
        return block, True
    return min(64, max(16, triton.next_power_of_2(channels))), False

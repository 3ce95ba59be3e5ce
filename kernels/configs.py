"""Autotuning configs, one small factory per kernel family.

Under the interpreter a single config is used, with tiles sized to the problem: the
interpreter's cost is per program instance and per element loaded, so tall row tiles and
column/reduction tiles no wider than the problem needs run fastest there, and autotuning would
only waste time. Every GPU config here fits sm_80's shared memory for fp32 operands
(``python -m kernels.compile_check`` proves it).

``CNN_AUTOTUNE=0`` keeps only the first GPU config of each kernel: no tuning runs and one
compile per shape. It is for correctness runs on a GPU (the GPU check's tests), where the tile
does not change the result and ``tests/test_conv2d_gpu_tiles.py`` runs every tile.
"""
import os

import triton

from .runtime import INTERPRET

AUTOTUNE = os.environ.get("CNN_AUTOTUNE", "1") != "0"

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
_IMPLICIT_GEMM_GPU = [
    (128, 128, 32, 8, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    # The same tiles over 8 warps: NCHW gathers its input element by element, and with 4 warps
    # these tiles run out of registers (spill) there; channels_last does not need them.
    (128, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (64, 64, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 64, 4, 3),
    (32, 64, 64, 4, 3),
    (256, 64, 32, 8, 3),
]
INTERPRET_BLOCK_M = 2048


def implicit_gemm_configs(interpret_tiles=None):
    """Tiles for the implicit-GEMM convolutions (forward, input grad, weight grad).

    interpret_tiles: the fixed tiles under the interpreter (default: a tall BLOCK_M); the
    other tiles then come from ``interpreter_tiles``.
    """
    if INTERPRET:
        tiles = interpret_tiles or {"BLOCK_M": INTERPRET_BLOCK_M}
        return [triton.Config(dict(tiles), num_warps=4, num_stages=1)]
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in _IMPLICIT_GEMM_GPU
    ]
    return configs if AUTOTUNE else configs[:1]


def _fit(n: int, low: int = 16, high: int = 64) -> int:
    return min(high, max(low, triton.next_power_of_2(int(n))))


def interpreter_tiles(**tile_args):
    """Under the interpreter, size each named tile from a kernel argument, e.g.
    ``interpreter_tiles(BLOCK_N="C_out_g")``: the next power of two in [16, 64]."""
    def decorate(kernel):
        if not INTERPRET:
            return kernel
        return triton.heuristics({
            tile: (lambda args, arg=arg: _fit(args[arg])) for tile, arg in tile_args.items()
        })(kernel)
    return decorate

"""GPU timing: triton.testing.do_bench (CUDA events, L2 flushed before each run) with quantiles.

Only called when a CUDA device exists: the CPU smoke run never times anything.
"""
import time

import torch

QUANTILES = (0.5, 0.2, 0.8)


def first_call_seconds(fn) -> float:
    """Wall time of the first call, compilation and autotuning included (synchronised)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(fn, warmup_ms: int = 25, rep_ms: int = 100) -> tuple:
    """(median, 20th percentile, 80th percentile) milliseconds of ``fn``'s GPU time; call
    ``first_call_seconds`` first so neither compilation nor autotuning is timed."""
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                                               quantiles=list(QUANTILES))
    return float(median), float(p20), float(p80)

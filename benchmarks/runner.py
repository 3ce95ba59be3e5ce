"""Run benchmark rows: build, check ours against torch, then time both: on a GPU with CUDA
events, in a CPU rehearsal (``python -m benchmarks --rehearse``) by the wall clock, which
rehearses the code path and measures nothing worth reading."""
import statistics
import time
import traceback

import torch

from . import roofline, timing
from .ops import TOLERANCE, Bench, dtype_context


def describe(shape) -> str:
    """'N32 C64 56x56 -> 128 k3 s2 p1' for convs, 'N32 C64 112x112 k3 s2 p1' otherwise."""
    if hasattr(shape, "c_out"):
        bias = "" if shape.bias else " nobias"
        return (f"N{shape.batch} C{shape.c_in} {shape.h}x{shape.w} -> {shape.c_out} "
                f"k{shape.kernel} s{shape.stride} p{shape.padding}{bias}")
    return (f"N{shape.batch} C{shape.channels} {shape.h}x{shape.w} "
            f"k{shape.kernel} s{shape.stride} p{shape.padding}")


def arithmetic(b: Bench) -> dict:
    """The row's roofline arithmetic: FLOPs, minimum bytes, FLOPs per byte."""
    return {"op": b.op, "shape": b.shape.name, "dims": describe(b.shape), "dtype": b.dtype,
            "layout": b.layout, "flops": b.flops, "bytes": b.nbytes,
            "intensity": round(b.flops / b.nbytes, 2) if b.nbytes else 0.0}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_first_call_seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_measure(fn, warmup_ms=0, rep_ms=0, reps: int = 1) -> tuple:
    """(median, 20th, 80th percentile) wall-clock milliseconds of ``reps`` calls (one: the
    interpreter is slow): the CPU rehearsal's stand-in for do_bench, not a performance
    figure."""
    times = sorted(cpu_first_call_seconds(fn) * 1e3 for _ in range(reps))
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return statistics.median(times), pick(0.2), pick(0.8)


def run_row(b: Bench, device, peak=None, warmup_ms=25, rep_ms=100, timed=None) -> dict:
    """One row. On CUDA: the comparison, the first-call time (compilation, autotuning, cuDNN's
    search) and do_bench quantiles. On a CPU: the comparison only, unless ``timed`` (the
    rehearsal), which times by the wall clock."""
    row = arithmetic(b)
    row["check"], row["error"] = "", ""
    gpu = device.type == "cuda"
    timed = gpu if timed is None else timed
    first_call = timing.first_call_seconds if gpu else cpu_first_call_seconds
    try:
        with dtype_context(b.dtype):
            ours_fn, torch_fn, compare = b.make(device)
            if timed:
                row["ours_first_call_s"] = round(first_call(ours_fn), 3)
                row["torch_first_call_s"] = round(first_call(torch_fn), 3)
            err = compare(ours_fn(), torch_fn())
            _sync(device)
            row["max_rel_err"] = f"{err:.2e}"
            row["check"] = "ok" if err <= TOLERANCE[b.dtype] else "MISMATCH"
            if timed:
                _time_both(row, b, ours_fn, torch_fn, peak, warmup_ms, rep_ms,
                           None if gpu else cpu_measure)
    except Exception as exc:  # a failing row is recorded and the run goes on
        row["check"] = "ERROR"
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        row["traceback"] = traceback.format_exc()
    return row


def _time_both(row, b: Bench, ours_fn, torch_fn, peak, warmup_ms, rep_ms, measure=None):
    measure = measure or timing.measure
    for side, fn in (("ours", ours_fn), ("torch", torch_fn)):
        median, p20, p80 = measure(fn, warmup_ms, rep_ms)
        seconds = median / 1e3
        row[f"{side}_ms"] = round(median, 5)
        row[f"{side}_p20_ms"] = round(p20, 5)
        row[f"{side}_p80_ms"] = round(p80, 5)
        row[f"{side}_tflops"] = round(b.flops / seconds / 1e12, 3) if b.flops else ""
        row[f"{side}_gbps"] = round(b.nbytes / seconds / 1e9, 2)
        pct = roofline.percent_of_roofline(peak, b.dtype, b.flops, b.nbytes, seconds)
        row[f"{side}_pct_roofline"] = round(pct, 2) if pct is not None else ""
    row["peak"] = peak.name if peak is not None else "GPU not in the peak table"
    row["speedup"] = round(row["torch_ms"] / row["ours_ms"], 4)


def run_rows(benches, device, peak=None, budget_s=None, on_row=None, warmup_ms=25, rep_ms=100,
             timed=None):
    """Run rows in order; with ``budget_s`` no row starts after the budget is spent. Returns
    (rows run, rows left out). timed: see run_row."""
    start, rows = time.perf_counter(), []
    for i, b in enumerate(benches):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            return rows, benches[i:]
        row = run_row(b, device, peak, warmup_ms, rep_ms, timed)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows, []

"""Run benchmark rows: build, check ours against torch, then (on a GPU only) time both."""
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


def run_row(b: Bench, device, peak=None, warmup_ms=25, rep_ms=100) -> dict:
    """One row. On CPU: one call of each side and the comparison, no timing. On CUDA: also the
    first-call time (compilation, autotuning, cuDNN's search) and do_bench quantiles."""
    row = arithmetic(b)
    row["check"], row["error"] = "", ""
    try:
        with dtype_context(b.dtype):
            ours_fn, torch_fn, compare = b.make(device)
            timed = device.type == "cuda"
            if timed:
                row["ours_first_call_s"] = round(timing.first_call_seconds(ours_fn), 3)
                row["torch_first_call_s"] = round(timing.first_call_seconds(torch_fn), 3)
            err = compare(ours_fn(), torch_fn())
            _sync(device)
            row["max_rel_err"] = f"{err:.2e}"
            row["check"] = "ok" if err <= TOLERANCE[b.dtype] else "MISMATCH"
            if timed:
                _time_both(row, b, ours_fn, torch_fn, peak, warmup_ms, rep_ms)
    except Exception as exc:  # a failing row is recorded and the run goes on
        row["check"] = "ERROR"
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        row["traceback"] = traceback.format_exc()
    return row


def _time_both(row, b: Bench, ours_fn, torch_fn, peak, warmup_ms, rep_ms):
    for side, fn in (("ours", ours_fn), ("torch", torch_fn)):
        median, p20, p80 = timing.measure(fn, warmup_ms, rep_ms)
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


def run_rows(benches, device, peak=None, budget_s=None, on_row=None, warmup_ms=25, rep_ms=100):
    """Run rows in order; with ``budget_s`` no row starts after the budget is spent. Returns
    (rows run, rows left out)."""
    start, rows = time.perf_counter(), []
    for i, b in enumerate(benches):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            return rows, benches[i:]
        row = run_row(b, device, peak, warmup_ms, rep_ms)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows, []

"""``python -m benchmarks``: op benchmarks against torch on a GPU, a smoke check without one."""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cnn import kernels  # noqa: F401  (decides compiled vs interpreted before triton is imported)

from . import fused_traffic, ops, report, roofline, runner, shapes
from .env import REPO, environment
from .static import report as static_report

TIMED_COLUMNS = ("op", "shape", "dtype", "layout", "ours_ms", "torch_ms", "speedup",
                 "ours_tflops", "ours_gbps", "ours_pct_roofline", "torch_pct_roofline", "check",
                 "error")
SMOKE_COLUMNS = ("op", "shape", "dtype", "layout", "check", "max_rel_err", "error")
ARITHMETIC_COLUMNS = ("op", "shape", "dims", "dtype", "flops", "bytes", "intensity")


def _split(text: str):
    return [t.strip() for t in text.split(",") if t.strip()]


def build_benches(op_names, shape_filter, dtypes, layouts, conv_shapes, activation_shapes):
    benches = []
    for op in op_names:
        for shape in ops.shapes_for(op, conv_shapes, activation_shapes):
            if shape_filter and not any(f in shape.name for f in shape_filter):
                continue
            benches += [ops.Bench(op, shape, d, lay) for d in dtypes for lay in layouts]
    return benches


# (dtype, layout) in the order a time-limited run measures them: the fast path, then the
# layout and precision most torch code runs in, then the rest.
TIERS = (("bf16", "channels_last"), ("tf32", "nchw"), ("fp16", "channels_last"),
         ("fp32", "nchw"), ("tf32", "channels_last"), ("bf16", "nchw"), ("fp16", "nchw"),
         ("fp32", "channels_last"))
# The layers measured first, in this order (a typical 3x3 ResNet layer and its activation),
# then ResNet-18's others, the MNIST layers at batch 256, the rest.
LEAD_SHAPES = ("resnet18.layer1.3x3.", "resnet18.layer1_out.")


def _shape_priority(name: str) -> int:
    for i, lead in enumerate(LEAD_SHAPES):
        if name.startswith(lead):
            return i
    if name.startswith("resnet18"):
        return len(LEAD_SHAPES)
    return len(LEAD_SHAPES) + (1 if ".b256" in name else 2)


def budget_order(benches):
    """The order of a time-limited run, so that every op family is measured early: first
    every op once on its lead shape in the first two (dtype, layout) tiers present (bf16
    channels_last, TF32 NCHW), then every op layer by layer in the first tier, then the other
    tiers on the lead shape, then everything else layer by layer."""
    ops_order = list(dict.fromkeys(b.op for b in benches))
    shapes_of = {}
    for b in benches:
        names = shapes_of.setdefault(b.op, [])
        if b.shape.name not in names:
            names.append(b.shape.name)
    rank = {op: {n: i for i, n in enumerate(sorted(names, key=_shape_priority))}
            for op, names in shapes_of.items()}
    present = sorted({(b.dtype, b.layout) for b in benches},
                     key=lambda t: TIERS.index(t) if t in TIERS else len(TIERS))

    def key(b):
        r, tier, op = rank[b.op][b.shape.name], present.index((b.dtype, b.layout)), \
            ops_order.index(b.op)
        if r == 0 and tier < 2:
            return (0, tier, 0, op)
        if tier == 0:
            return (1, r, 0, op)
        if r == 0:
            return (2, tier, 0, op)
        return (3, r, tier, op)

    return sorted(benches, key=key)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--ops", default="", help="comma-separated ops or families "
                   f"(default all): {', '.join(ops.ALL_OPS)}")
    p.add_argument("--shapes", default="", help="substrings of shape names, e.g. mnist,b256,"
                   "resnet18.layer3 (default all)")
    p.add_argument("--dtypes", default="fp32,tf32,fp16,bf16",
                   help="fp32 (TF32 off), tf32 (fp32 with TF32 on), fp16, bf16")
    p.add_argument("--layouts", default="nchw,channels_last")
    p.add_argument("--out", default=None, help="folder for the CSV, JSON and plots (GPU default:"
                   " benchmarks/results/run-<date>; CPU: nothing written unless given)")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time per side")
    p.add_argument("--budget-s", type=float, default=None, help="start no row after this many "
                   "seconds; rows then run in budget_order (fast path first)")
    p.add_argument("--static-report", default="auto", help="CPU run: static report JSON to "
                   "show, 'auto' (saved report if current, else run the check), or 'skip'")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--list", action="store_true", help="list the rows and their roofline "
                   "arithmetic, run nothing")
    p.add_argument("--rehearse", action="store_true", help="the GPU run's code path on a CPU "
                   "(the GPU check's rehearsal): every op on the tiny smoke shapes through the "
                   "interpreter, timed by the wall clock (not a performance figure), the same "
                   "files; needs --out")
    a = p.parse_args(argv)
    a.ops, a.shapes = ops.select_ops(_split(a.ops)), _split(a.shapes)
    a.dtypes, a.layouts = _split(a.dtypes), _split(a.layouts)
    for d in a.dtypes:
        if d not in ops.DTYPES:
            p.error(f"unknown dtype {d!r}: choose from {', '.join(ops.DTYPES)}")
    for lay in a.layouts:
        if lay not in ops.LAYOUTS:
            p.error(f"unknown layout {lay!r}: choose from {', '.join(ops.LAYOUTS)}")
    return a


REHEARSAL_GPU = "none (CPU rehearsal: interpreter, wall-clock times, not performance figures)"


def run_gpu(a, rehearse: bool = False) -> int:
    """The timed run; with ``rehearse``, its code path on a CPU (see --rehearse)."""
    if rehearse:
        env, device = dict(environment(), gpu=REHEARSAL_GPU), torch.device("cpu")
        conv_shapes, activation_shapes = [shapes.SMOKE_CONV], [shapes.SMOKE_ACTIVATION]
    else:
        torch.backends.cudnn.benchmark = True
        env, device = environment(), torch.device("cuda")
        conv_shapes, activation_shapes = shapes.conv_shapes(), shapes.activation_shapes()
    peak = roofline.peak_for(env["gpu"])
    out = Path(a.out or REPO / "benchmarks" / "results" / time.strftime("run-%Y%m%d-%H%M%S"))
    benches = build_benches(a.ops, [] if rehearse else a.shapes, a.dtypes, a.layouts,
                            conv_shapes, activation_shapes)
    if a.budget_s is not None:
        benches = budget_order(benches)
    print(f"{env['gpu']}: torch {env['torch_version']}, triton {env['triton_version']}; "
          f"peak table: {peak.name if peak else 'GPU not in the table, no roofline %'}; "
          f"{len(benches)} rows -> {out}", flush=True)
    log = report.CsvLog(out / "benchmarks.csv", env)

    def on_row(row):
        log.write(row)
        print(report.format_table([row], TIMED_COLUMNS).splitlines()[1], flush=True)

    rows, left = runner.run_rows(benches, device, peak, a.budget_s, on_row, a.warmup_ms,
                                 a.rep_ms, timed=True)
    log.close()
    print(report.format_table(rows, TIMED_COLUMNS))
    plots = [] if a.no_plots else report.plot_speedups(rows, out / "plots")
    left_out = [f"{b.op} {b.shape.name} {b.dtype} {b.layout}" for b in left]
    (out / "benchmarks.json").write_text(json.dumps({
        "meta": env, "peak": vars(peak) if peak else None,
        "peak_sources": roofline.__doc__, "rows": rows, "left_out_by_budget": left_out,
        "budget_order": a.budget_s is not None, "plots": plots}, indent=1, default=str))
    return _summary(rows, left_out)


def _summary(rows, left_out) -> int:
    errors = [r for r in rows if r["check"] == "ERROR"]
    mismatches = [r for r in rows if r["check"] == "MISMATCH"]
    print(f"{len(rows)} rows: {len(errors)} errors, {len(mismatches)} mismatches against torch"
          + (f"; {len(left_out)} rows left out by --budget-s" if left_out else ""))
    for r in errors:
        print(f"ERROR {r['op']} {r['shape']} {r['dtype']} {r['layout']}: {r['error']}")
    return 1 if errors or mismatches else 0


def run_cpu(a) -> int:
    print("No CUDA device: nothing is timed. Each benchmark runs ONCE through Triton's "
          "interpreter on a tiny shape and is compared with torch: a smoke check, NOT a "
          "performance figure.\n", flush=True)
    smoke_dtypes = [d for d in a.dtypes if d != "tf32"] or ["fp32"]
    benches = build_benches(a.ops, [], smoke_dtypes[:1], a.layouts, [shapes.SMOKE_CONV],
                            [shapes.SMOKE_ACTIVATION])
    rows, _ = runner.run_rows(benches, torch.device("cpu"))
    print(report.format_table(rows, SMOKE_COLUMNS) + "\n")
    out = Path(a.out) if a.out else None
    if out:
        env = dict(environment(), gpu="none (CPU interpreter smoke, not timed)")
        log = report.CsvLog(out / "cpu_smoke.csv", env, report.ENV_COLUMNS + list(SMOKE_COLUMNS))
        for r in rows:
            log.write(r)
        log.close()
    static_ok = _print_static(a, out)
    _print_arithmetic(a, out)
    _print_fused_traffic(out)
    status = _summary(rows, [])
    return status or (0 if static_ok else 1)


def _print_static(a, out) -> bool:
    if a.static_report == "skip":
        print("static report: skipped (--static-report skip)\n")
        return True
    try:
        rows, source = static_report.load(90, None if a.static_report == "auto"
                                          else a.static_report)
    except RuntimeError as exc:
        print(f"static report: FAILED: {exc}\n")
        return False
    table = report.format_table(static_report.table_rows(rows), static_report.COLUMNS)
    print(f"Static report, sm_90, every kernel config (from {source}):\n{table}\n")
    if out:
        (out / "static_sm90.txt").write_text(table + "\n")
    return all(r["ok"] and not r["over_shared"] for r in rows)


def _print_arithmetic(a, out) -> None:
    benches = build_benches(a.ops, a.shapes, ["fp32", "bf16"], ["nchw"], shapes.conv_shapes(),
                            shapes.activation_shapes())
    rows = [runner.arithmetic(b) for b in benches]
    print("Roofline arithmetic of every benchmark shape (fp32: 4-byte, bf16/fp16: 2-byte "
          "elements; FLOPs per pass, minimum bytes; see benchmarks/roofline.py):")
    print(report.format_table(rows, ARITHMETIC_COLUMNS))
    for name, peak in ((p.name, p) for _, p in roofline.PEAKS if "NVL" not in p.name):
        ridge = {d: round(peak.tflops[d] * 1e12 / (peak.gbps * 1e9), 1) for d in ("fp32", "bf16")}
        print(f"  {name}: ridge point {ridge['fp32']} FLOP/byte fp32, {ridge['bf16']} bf16")
    if out:
        log = report.CsvLog(out / "roofline_arithmetic.csv", {}, list(ARITHMETIC_COLUMNS))
        for r in rows:
            log.write(r)
        log.close()


def _print_fused_traffic(out) -> None:
    rows, counts = fused_traffic.report_rows(shapes.conv_shapes())
    print("\nFused conv+BN+ReLU against torch's conv, batch norm and ReLU, per forward: kernel "
          "launches (counted) and minimum activation traffic in MB at 2-byte elements "
          "(formulas in benchmarks/fused_traffic.py):")
    for side, names in counts.items():
        print(f"  {side}: {len(names)} launches: {', '.join(names)}")
    print(report.format_table(rows, fused_traffic.COLUMNS))
    if out:
        log = report.CsvLog(out / "fused_traffic.csv", {}, list(fused_traffic.COLUMNS))
        for r in rows:
            log.write(r)
        log.close()


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.list:
        benches = build_benches(a.ops, a.shapes, a.dtypes, a.layouts, shapes.conv_shapes(),
                                shapes.activation_shapes())
        print(report.format_table([runner.arithmetic(b) for b in benches],
                                  ARITHMETIC_COLUMNS + ("layout",)))
        return 0
    if a.rehearse:
        if not a.out:
            print("--rehearse writes the GPU run's files: give --out DIR", file=sys.stderr)
            return 2
        return run_gpu(a, rehearse=True)
    if torch.cuda.is_available() and not kernels.runtime.INTERPRET:
        return run_gpu(a)
    return run_cpu(a)


if __name__ == "__main__":
    sys.exit(main())

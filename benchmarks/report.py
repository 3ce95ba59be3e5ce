"""Benchmark output: one CSV (written row by row, so a killed run keeps what it measured), a
console table, and plots of torch_time / our_time when matplotlib is installed."""
import csv
from pathlib import Path

ENV_COLUMNS = ["gpu", "torch_version", "triton_version", "date", "git_commit"]
ROW_COLUMNS = [
    "op", "shape", "dims", "dtype", "layout", "flops", "bytes", "intensity",
    "ours_ms", "ours_p20_ms", "ours_p80_ms", "torch_ms", "torch_p20_ms", "torch_p80_ms",
    "ours_tflops", "torch_tflops", "ours_gbps", "torch_gbps",
    "ours_pct_roofline", "torch_pct_roofline", "peak", "speedup",
    "ours_first_call_s", "torch_first_call_s", "max_rel_err", "check", "error",
]
CSV_COLUMNS = ENV_COLUMNS + ROW_COLUMNS


class CsvLog:
    """Appends rows to ``path`` and flushes each one."""

    def __init__(self, path, env: dict, columns=CSV_COLUMNS):
        self.path, self.env, self.columns = Path(path), env, columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({**self.env, **row})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def format_table(rows, columns) -> str:
    """A fixed-width text table of ``columns`` (missing values print as '')."""
    cells = [[str(c) for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def plot_speedups(rows, out_dir) -> list:
    """One PNG per op: torch_time / our_time per (shape, dtype, layout), 1.0 marked. Returns
    the files written; prints why when matplotlib is missing or nothing was timed."""
    timed = [r for r in rows if r.get("speedup") not in (None, "")]
    if not timed:
        print("plots: no timed rows, nothing to plot")
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots: matplotlib is not installed, skipping them (pip install matplotlib)")
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for op in dict.fromkeys(r["op"] for r in timed):
        sel = [r for r in timed if r["op"] == op]
        labels = [f"{r['shape']} {r['dtype']} {r['layout']}" for r in sel]
        values = [float(r["speedup"]) for r in sel]
        fig, ax = plt.subplots(figsize=(9, 0.28 * len(sel) + 1.2))
        ax.barh(range(len(sel)), values, color=["tab:green" if v >= 1 else "tab:red"
                                                for v in values])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(sel)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("torch time / our time (>1: ours faster)")
        ax.set_title(f"{op} on {sel[0].get('gpu', '')}")
        fig.tight_layout()
        path = out_dir / f"speedup_{op.replace('+', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(str(path))
    return files


# The GPU check's closing table: one column per op, short names.
SUMMARY_COLUMNS = (("conv2d.fwd", "fwd"), ("conv2d.dgrad", "dgrad"), ("conv2d.wgrad", "wgrad"),
                   ("conv2d.fwd+bwd", "fwd+bwd"), ("conv_bn_relu.train.fwd+bwd", "fused"),
                   ("conv_bn_relu.train.fwd", "fusedF"), ("conv_bn_relu.eval.fwd", "fusedE"),
                   ("max_pool2d.fwd", "maxpool"), ("max_pool2d.bwd", "maxpool.b"),
                   ("avg_pool2d.fwd", "avgpool"), ("avg_pool2d.bwd", "avgpool.b"),
                   ("batch_norm.fwd", "bn"), ("batch_norm.bwd", "bn.b"), ("relu.fwd", "relu"))
MNIST_NAMES = (("ours", "ours"), ("torch_eager", "torch eager"),
               ("torch_compile", "torch.compile"))


def _cell(row: dict) -> str:
    if row.get("check") in ("MISMATCH", "ERROR"):
        return row["check"]
    speedup = row.get("speedup")
    if speedup in (None, ""):
        return "?"
    return f"{float(speedup):.2f}" if float(speedup) >= 0.1 else f"{float(speedup):.2g}"


def speed_table(rows) -> str:
    """ours/cuDNN speed (torch time / our time) per layer (shape), dtype and layout, one column
    per op measured; '.' where a row was not measured."""
    cells, columns = {}, []
    for r in rows:
        key = (r["shape"], r["dtype"], r["layout"])
        cells.setdefault(key, {})[r["op"]] = _cell(r)
    for op, label in SUMMARY_COLUMNS:
        if any(op in c for c in cells.values()):
            columns.append((op, label))
    table = [{"layer": shape, "dtype": f"{dtype} {layout}",
              **{label: c.get(op, ".") for op, label in columns}}
             for (shape, dtype, layout), c in cells.items()]
    return format_table(table, ["layer", "dtype"] + [label for _, label in columns])


def _mnist_cell(run: dict) -> str:
    if run.get("seconds_to_99_val") is not None:
        return f"{run['seconds_to_99_val']:.1f} s"
    if run.get("status") == "ok":
        val = run.get("val_accuracy")
        return "not reached" + (f" (val {100 * val:.1f}%)" if val is not None else "")
    return str(run.get("status", "not run"))


def gpu_check_summary(report: dict, bench_rows) -> str:
    """The table that ends the GPU check's output: each stage's status, ours/cuDNN per layer
    and op, MNIST time to 99% for ours, torch eager and torch.compile."""
    meta, stages = report["meta"], report["stages"]
    lines = [f"GPU check ({report['mode']}): {meta['gpu']}, torch {meta['torch_version']}, "
             f"triton {meta['triton_version']}, {meta['date']}, commit {meta['git_commit']}"]
    for name, r in stages.items():
        detail = ""
        if name == "configs" and "run" in r:
            detail = f"{r['ok']}/{r['run']} configs match torch ({r['enumerated']} enumerated" \
                     + (f"; rehearsal subset: {r['subset']})" if r.get("subset") else ")")
        elif name == "tests" and "counts" in r:
            detail = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["counts"].items())
        elif name == "bench" and "rows" in r:
            detail = f"{r['rows']} rows, {r['mismatches']} mismatches, {r['errors']} errors" \
                     + (f", {r['left_out_by_budget']} left out by the budget"
                        if r.get("left_out_by_budget") else "")
        took = f" in {r['seconds']} s" if "seconds" in r else ""
        lines.append(f"  {name:8s}{r.get('status')}{took}" + (f": {detail}" if detail else ""))
    timed = [r for r in bench_rows if r.get("check") in ("ok", "MISMATCH", "ERROR")]
    if timed:
        lines += ["", "ours/cuDNN speed per layer (torch time / our time, > 1: ours faster; "
                  "MISMATCH/ERROR: the row failed its check against torch):",
                  speed_table(timed)]
    fast = (stages.get("mnist") or {}).get("fast_recipe")
    if fast:
        cells = [f"{label} {_mnist_cell(fast.get(key, {}))}" for key, label in MNIST_NAMES]
        ratio = fast.get("ours_over_torch_time")
        lines += ["", "MNIST, cnn.train --recipe fast, training seconds to 99% validation "
                  "accuracy (warm-up excluded):", "  " + " | ".join(cells)
                  + (f"  (ours / torch eager time {ratio})" if ratio else "")]
    if report["mode"] == "rehearsal":
        lines += ["", "REHEARSAL on a CPU through Triton's interpreter: every time above is "
                  "the interpreter's, not a performance figure."]
    return "\n".join(lines)

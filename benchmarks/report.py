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

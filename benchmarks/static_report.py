"""The static report of every kernel config for one target, from
``benchmarks.static.compile_check``.

A saved report (``benchmarks/results/compile_check.json``) is shown; the kernel modules whose
sources changed since it was made (their source hash, with the kernels modules they import,
differs from the one saved) are named as STALE with the command that refreshes it, which
recompiles only those modules' kernels. Without a saved report the check runs now, in its own
process (it needs TRITON_INTERPRET=0), for the one target, with a time limit.

Each convolution row gives its layer, layout, pass, the main loop's instructions per MMA beside
the reference GEMM's (same M, N, K, tile and target) and their ratio, the operand loads, MMA
groups in flight, and, where the caller's layout is converted, the bytes the conversions move
beside the pass's own minimum traffic.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .env import REPO

SAVED = REPO / "benchmarks" / "results" / "compile_check.json"
COLUMNS = ("kernel", "layer", "layout", "label", "config", "dtype", "registers", "shared",
           "spill", "mma", "loads", "in flight", "loop/mma", "ref/mma", "ratio",
           "convert/min MB", "status")


def stale_modules(report: dict) -> list:
    """The kernel modules whose current source hash differs from the report's (all of them
    for a report that saved no per-module hashes)."""
    # Imported here: compile_cases imports the kernels package, which picks interpret mode.
    from benchmarks.static.compile_cases import module_hash
    from benchmarks.static.compile_check import KERNEL_MODULES, REFERENCE_MODULE

    saved = report.get("meta", {}).get("module_hashes")
    modules = KERNEL_MODULES + [REFERENCE_MODULE]
    if not saved:
        return modules
    return [m for m in modules if saved.get(m) != module_hash(m)]


def load(target: int = 90, path=None, timeout_s: int = 3600):
    """(rows for ``target``, where they came from). A saved report is used even when the kernel
    sources changed since (a full check takes long on a CPU), and then labelled STALE with the
    command that refreshes it; only without one does the check run now. Raises RuntimeError
    when that fails."""
    candidate = Path(path) if path else SAVED
    if candidate.exists():
        report = json.loads(candidate.read_text())
        meta = report.get("meta", {})
        note = ""
        stale = stale_modules(report)
        if stale:
            note = (f" -- STALE for {', '.join(m.removeprefix('kernels.') for m in stale)}: made "
                    f"{meta.get('date', '?')} at commit {meta.get('git_commit', '?')} from other "
                    f"sources; refresh (recompiles only those) with "
                    f"`python -m benchmarks.static.compile_check --json {SAVED.relative_to(REPO)}`")
        if meta.get("partial"):
            note += (" -- PARTIAL: an interrupted regeneration; the same command completes it "
                     "(what is done is reused)")
        from benchmarks.static.compile_check import KERNEL_MODULES
        missing = [m for m in KERNEL_MODULES if m not in report.get("registered", {})]
        if missing:
            note += f" -- NOT IN IT: {', '.join(missing)}"
        rows = [r for r in report["results"] if r["target"] == target]
        return rows, f"{candidate}{note}"
    if path:
        raise RuntimeError(f"no compile_check report at {path}")
    print(f"static report: no saved report at {SAVED}; running compile_check for sm_{target} now "
          "(tens of minutes on a cold Triton cache)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compile_check.json"
        env = dict(os.environ, TRITON_INTERPRET="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "benchmarks.static.compile_check", "--targets", str(target),
               "--json", str(out)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.terminate()  # compile_check then kills its workers and their ptxas runs
            proc.communicate()
            raise RuntimeError(f"compile_check did not finish in {timeout_s} s; run "
                               "`python -m benchmarks.static.compile_check --json "
                               f"{SAVED}` once") from exc
        if not out.exists():
            raise RuntimeError(f"compile_check failed (exit {proc.returncode}):\n"
                               f"{stderr[-2000:]}")
        report = json.loads(out.read_text())
    return [r for r in report["results"] if r["target"] == target], "compile_check, run now"


def _mb(value) -> str:
    return f"{value / 1e6:.1f}"


def table_rows(rows):
    """Rows for ``report.format_table`` with COLUMNS (reports of older formats lack the loop
    columns: they print empty)."""
    out = []
    for r in rows:
        ok = r.get("ok")
        status = "ok" if ok else "FAIL " + r.get("error", "")
        if ok and r.get("over_shared"):
            status = "OVER shared limit"
        elif ok and r.get("spills"):
            status = "ok (spills)"
        if ok and r.get("target_misses"):
            status += "; misses: " + ", ".join(r["target_misses"])
        spill = r.get("spill_bytes", r.get("spill_store_bytes", 0) + r.get("spill_load_bytes", 0))
        convert = ""
        if r.get("min_bytes"):
            convert = f"{_mb(r.get('conversion_bytes', 0))}/{_mb(r['min_bytes'])}"
        out.append({
            "kernel": r["kernel"], "layer": r.get("layer", "-"), "layout": r.get("layout", "-"),
            "label": r["label"], "config": r["config"], "dtype": r["dtype"],
            "registers": r["registers"] if ok else "-", "shared": r["shared"] if ok else "-",
            "spill": spill if ok else "-",
            "mma": r.get("mma") or (",".join(r.get("tensor_cores", [])) or "no") if ok else "-",
            "loads": r.get("operand_loads", ""), "in flight": r.get("mma_in_flight", ""),
            "loop/mma": _opt(r.get("loop_instructions_per_mma")),
            "ref/mma": _opt(r.get("reference_instructions_per_mma")),
            "ratio": _opt(r.get("ratio_to_reference")), "convert/min MB": convert,
            "status": status,
        })
    return out


def _opt(value) -> str:
    return "" if value is None else str(value)

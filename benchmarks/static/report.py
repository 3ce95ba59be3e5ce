"""The static report: the compiles' results scored against the report targets, as a table and
as JSON, and the saved report (``benchmarks/results/compile_check.json``) read back.

``python -m benchmarks`` shows the saved report for one target: the kernel modules whose
sources changed since it was made (their source hash, with the kernels modules they import,
differs from the one saved) are named as STALE with the command that refreshes it, which
recompiles only those modules' kernels. Without a saved report the check runs now, in its own
process (it needs TRITON_INTERPRET=0), for the one target, with a time limit. What the report
holds and how to read it: benchmarks/README.md.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ..env import REPO, git_commit

SAVED = REPO / "benchmarks" / "results" / "compile_check.json"
REFRESH = f"python -m benchmarks.static --json {SAVED.relative_to(REPO)}"
# Report targets (benchmarks/README.md): reported, not the exit status.
RATIO_TARGET = 1.3
RATIO_AIM_FEW_CHANNELS = 2.0
TARGET_DTYPES = ("fp16", "bf16", "tf32")  # the tensor-core ones
COLUMNS = ("kernel", "layer", "layout", "label", "config", "dtype", "registers", "shared",
           "spill", "mma", "loads", "in flight", "loop/mma", "ref/mma", "ratio",
           "convert/min MB", "status")


# ---- scoring ---------------------------------------------------------------------------------

def link_references(results, subset=None) -> None:
    """Give each convolution config (of ``subset``, default all) its reference's instructions
    per MMA, the ratio, and the report targets it misses. ``results`` is every job's result in
    job order (None for one not done yet)."""
    for r in results if subset is None else subset:
        reference = results[r.reference] if r.reference >= 0 else None
        if reference is not None and r.ok and reference.ok:
            ref = reference.loop_instructions_per_mma
            r.reference_instructions_per_mma = ref
            if ref and r.loop_instructions_per_mma:
                r.ratio_to_reference = round(r.loop_instructions_per_mma / ref, 2)
        r.target_misses = _target_misses(r, reference) \
            if r.ok and r.gemm and r.case_index >= 0 and r.dtype in TARGET_DTYPES else []


def _c_in_per_group(layer: str):
    from .cases import LAYERS
    found = next((lay for lay in LAYERS if lay.name == layer), None)
    return found.c_in // found.groups if found else None


def _target_misses(r, reference=None) -> list:
    misses = []
    few = (_c_in_per_group(r.layer) or 16) < 16
    limit = RATIO_AIM_FEW_CHANNELS if few else RATIO_TARGET
    if r.ratio_to_reference is None or r.ratio_to_reference > limit:
        misses.append(f"ratio {r.ratio_to_reference} > {limit}")
    if few:
        return misses  # the other targets are for C_in/groups >= 16
    if r.spills:
        misses.append("spills")
    loads_ok = r.operand_loads == "tma" or (r.operand_loads in ("cp.async16", "cp.async16+index")
                                            and (r.async16_coverage or 0) >= 1)
    if not loads_ok:
        misses.append(f"operands by {r.operand_loads} (coverage {r.async16_coverage})")
    wgmma = "HGMMA" in (r.mma, getattr(reference, "mma", None))
    if r.target >= 90 and wgmma and r.mma_in_flight < 1:
        misses.append("no MMA group in flight")
    return misses


def summarize(results, fail_on_spill: bool):
    """(exit status, summary lines)."""
    failed = [r for r in results if not r.ok]
    over = [r for r in results if r.ok and r.over_shared]
    spilling = [r for r in results if r.ok and r.spills]
    conv = [r for r in results if r.ok and r.gemm and r.case_index >= 0
            and r.dtype in TARGET_DTYPES]
    lines = [
        f"{len(results)} compiles ({sum(r.cached for r in results)} from the saved report): "
        f"{len(failed)} failed, {len(over)} over the shared-memory limit, {len(spilling)} spill "
        f"(reported{', failing' if fail_on_spill else ''})",
        f"{len(conv)} tensor-core implicit-GEMM convolution configs: "
        f"{sum(not r.target_misses for r in conv)} meet the report targets (ratio to the "
        f"reference GEMM <= {RATIO_TARGET}, no spills, 16-byte async operands, an MMA group in "
        "flight where sm_90 runs wgmma; reported, not enforced)",
    ]
    if spilling:
        worst = max(spilling, key=lambda r: r.spill_bytes)
        lines.append(f"most spill: {worst.kernel} {worst.layer} {worst.layout} {worst.label} "
                     f"{worst.config} {worst.dtype} sm_{worst.target}: {worst.spill_store_bytes} "
                     f"B stored / {worst.spill_load_bytes} B loaded, stack {worst.stack} B")
    bad = failed or over or (fail_on_spill and spilling)
    return (1 if bad else 0), lines


# ---- the table and the JSON of a run ---------------------------------------------------------

def _fmt(value) -> str:
    return "-" if value is None else str(value)


def _status(r) -> str:
    if not r.ok:
        return "FAIL " + r.error
    if r.over_shared:
        return f"OVER smem limit {r.shared_limit}"
    return "ok (spills)" if r.spills else "ok"


def format_table(results) -> str:
    """One row per compile (reference GEMMs last)."""
    head = ("kernel", "layer", "layout", "case", "config", "dtype", "target", "regs", "smem",
            "spill", "mma", "loads", "in flight", "loop/mma", "ref/mma", "ratio", "status")
    rows = [head]
    for r in results:
        ok = r.ok
        rows.append((r.kernel, r.layer, r.layout, r.label, r.config, r.dtype, f"sm_{r.target}",
                     str(r.registers) if ok else "-", str(r.shared) if ok else "-",
                     str(r.spill_bytes) if ok else "-", r.mma if ok else "-",
                     r.operand_loads if ok else "-", str(r.mma_in_flight) if ok else "-",
                     _fmt(r.loop_instructions_per_mma), _fmt(r.reference_instructions_per_mma),
                     _fmt(r.ratio_to_reference), _status(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  "
                     + row[-1] for row in rows)


def record(r) -> dict:
    """One JSON record of a result (every field, and the derived ones)."""
    return dict(asdict(r), spills=r.spills, spill_bytes=r.spill_bytes, mma=r.mma,
                over_shared=r.over_shared, config_kwargs=r.tile)


def to_json(results, wall_s: float, targets, quick: bool, partial: bool = False,
            commit: str = None) -> dict:
    """The report: every record, the kernels each module registers, the run's meta (``commit``:
    the sources' commit, default the checkout's now)."""
    import triton

    from .cases import KERNEL_MODULES, REFERENCE_MODULE, registered_kernels
    from .compile import SHARED_LIMIT, module_hash, tool_hash

    modules = sorted({r.module for r in results} | set(KERNEL_MODULES) | {REFERENCE_MODULE})
    return {
        "registered": registered_kernels(),
        "meta": {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "git_commit": commit or git_commit(), "module_hashes": {m: module_hash(m)
                                                               for m in modules},
                 "tool_hash": tool_hash(), "targets": list(targets), "quick": quick,
                 "partial": partial,
                 "wall_s": round(wall_s, 1), "compiled": sum(not r.cached for r in results),
                 "reused": sum(r.cached for r in results),
                 "compile_s": round(sum(r.seconds for r in results if not r.cached), 1),
                 "compile_cpu_s": round(sum(r.cpu_seconds for r in results if not r.cached), 1),
                 "shared_limit": SHARED_LIMIT},
        "results": [record(r) for r in results],
    }


# ---- a saved report, read back ---------------------------------------------------------------

def load_saved(path) -> dict:
    """key -> result record of a saved report (empty when there is none or it is unreadable)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {r["key"]: r for r in report.get("results", []) if r.get("key")}


def stale_modules(report: dict) -> list:
    """The kernel modules whose current source hash differs from the report's (all of them
    for a report that saved no per-module hashes)."""
    # Imported here: the cases import the kernels package, which picks interpret mode.
    from .cases import KERNEL_MODULES, REFERENCE_MODULE
    from .compile import module_hash

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
            names = ", ".join(m.removeprefix("cnn.kernels.") for m in stale)
            note = (f" -- STALE for {names}: made "
                    f"{meta.get('date', '?')} at commit {meta.get('git_commit', '?')} from other "
                    f"sources; refresh (recompiles only those) with `{REFRESH}`")
        if meta.get("partial"):
            note += (" -- PARTIAL: an interrupted regeneration; the same command completes it "
                     "(what is done is reused)")
        from .cases import KERNEL_MODULES
        missing = [m for m in KERNEL_MODULES if m not in report.get("registered", {})]
        if missing:
            note += f" -- NOT IN IT: {', '.join(missing)}"
        rows = [r for r in report["results"] if r["target"] == target]
        return rows, f"{candidate}{note}"
    if path:
        raise RuntimeError(f"no static report at {path}")
    print(f"static report: no saved report at {SAVED}; running python -m benchmarks.static for "
          f"sm_{target} now (tens of minutes on a cold Triton cache)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compile_check.json"
        env = dict(os.environ, TRITON_INTERPRET="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "benchmarks.static", "--targets", str(target),
               "--json", str(out)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.terminate()  # the tool then kills its workers and their ptxas runs
            proc.communicate()
            raise RuntimeError(f"python -m benchmarks.static did not finish in {timeout_s} s; "
                               f"run `{REFRESH}` once") from exc
        if not out.exists():
            raise RuntimeError(f"python -m benchmarks.static failed (exit {proc.returncode}):\n"
                               f"{stderr[-2000:]}")
        report = json.loads(out.read_text())
    return [r for r in report["results"] if r["target"] == target], "static report, run now"


def _mb(value) -> str:
    return f"{value / 1e6:.1f}"


def table_rows(rows):
    """Rows of saved records for ``benchmarks.report.format_table`` with COLUMNS (reports of
    older formats lack the loop columns: they print empty)."""
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


__all__ = ["SAVED", "COLUMNS", "RATIO_TARGET", "RATIO_AIM_FEW_CHANNELS", "TARGET_DTYPES",
           "link_references", "summarize", "format_table", "record", "to_json", "load_saved",
           "stale_modules", "load", "table_rows"]

"""The static report of every kernel config for one target, from ``kernels.compile_check``.

A saved report (``benchmarks/results/compile_check.json``) is shown, marked STALE when the kernel
sources changed since it was made (its ``kernels_hash`` differs); without one the check runs
now, in its own process (it needs TRITON_INTERPRET=0), for the one target, with a time limit.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .env import REPO

SAVED = REPO / "benchmarks" / "results" / "compile_check.json"
COLUMNS = ("kernel", "label", "config", "dtype", "registers", "shared", "spill st/ld", "stack",
           "tensor cores", "status")


def _current_hash() -> str:
    # Imported here: compile_check imports the kernels package, which picks interpret mode.
    from kernels.compile_check import kernels_hash
    return kernels_hash()


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
        if meta.get("kernels_hash") != _current_hash():
            note = (f" -- STALE: made {meta.get('date', '?')} at commit "
                    f"{meta.get('git_commit', '?')} from other kernel sources; refresh with "
                    f"`python -m kernels.compile_check --json {SAVED.relative_to(REPO)}`")
        from kernels.compile_check import KERNEL_MODULES
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
        cmd = [sys.executable, "-m", "kernels.compile_check", "--targets", str(target),
               "--json", str(out)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.terminate()  # compile_check then kills its workers and their ptxas runs
            proc.communicate()
            raise RuntimeError(f"compile_check did not finish in {timeout_s} s; run "
                               f"`python -m kernels.compile_check --json {SAVED}` once") from exc
        if not out.exists():
            raise RuntimeError(f"compile_check failed (exit {proc.returncode}):\n"
                               f"{stderr[-2000:]}")
        report = json.loads(out.read_text())
    return [r for r in report["results"] if r["target"] == target], "compile_check, run now"


def table_rows(rows):
    """Rows for ``report.format_table`` with COLUMNS."""
    out = []
    for r in rows:
        ok = r.get("ok")
        status = "ok" if ok else "FAIL " + r.get("error", "")
        if ok and r.get("over_shared"):
            status = "OVER shared limit"
        elif ok and r.get("spills"):
            status = "ok (spills)"
        out.append({
            "kernel": r["kernel"], "label": r["label"], "config": r["config"],
            "dtype": r["dtype"], "registers": r["registers"] if ok else "-",
            "shared": r["shared"] if ok else "-",
            "spill st/ld": f"{r['spill_store_bytes']}/{r['spill_load_bytes']}" if ok else "-",
            "stack": r["stack"] if ok else "-",
            "tensor cores": (",".join(r["tensor_cores"]) or "no") if ok else "-",
            "status": status,
        })
    return out

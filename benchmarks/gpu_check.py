"""The GPU check: one command for everything that needs a CUDA GPU, time-boxed to fit 8 minutes.

    python -m benchmarks.gpu_check --out DIR --mnist-dir DIR [--budget-s 420]

Run from the repository root; nothing needs installing (the root goes on PYTHONPATH) and no
network is used. Stages, each in its own process group, killed when its time is up:
    tests      python -m pytest tests, compiled (the tests add fp16/bf16 and bigger shapes on
               CUDA), with CNN_AUTOTUNE=0 (one tile config a kernel, no tuning runs)
               -> DIR/pytest.log, DIR/pytest.xml
    bench      python -m benchmarks --budget-s ...: ours against torch/cuDNN, fast path first
               -> DIR/bench/benchmarks.csv, benchmarks.json, plots/
    mnist      python -m benchmarks.end_to_end --recipes fast,seed --epochs 3: MNIST to 99%
               with --recipe fast (2 epochs; time to 99% validation accuracy, ours against
               torch eager: the "fast_recipe" row), then the seed's recipe for 3 epochs (ours,
               torch eager, torch.compile), each backend warmed up first (a short run compiles
               and autotunes every shape, kept on disk), then timed
               -> DIR/mnist/mnist_end_to_end.json; and the compiles
               and tuning runs that run triggers, counted from the launchers' keys
               (python -m benchmarks.static.compile_count) -> DIR/mnist/compile_count_<layout>.json
and DIR/gpu_check.json (GPU name, torch and Triton versions, date, commit, every stage's status,
time and summary), DIR/nvidia-smi.txt. A stage's unused time passes to the stages after it.
Degrading: without pytest the tests stage is recorded as skipped (the bench stage still checks
every op it times against torch); without hypothesis the test modules that import it fail to
collect and are reported, the others run; without matplotlib there are no plots.
"""
import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .env import REPO, environment

# Seconds each stage may use when the ones before it used all of theirs; a stage past its limit
# gets GRACE_S more to stop cleanly. 420 + 3 x 10 + start-up stays under 8 minutes.
SHARES = {"tests": 140.0, "bench": 140.0, "mnist": 140.0}
GRACE_S = 10


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), PYTHONUNBUFFERED="1")


def run_stage(name: str, cmd, log_path: Path, timeout_s: float, env=None) -> dict:
    """Run ``cmd`` with output to ``log_path``; on timeout the whole process group is killed.
    env: extra environment variables."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(cmd)}\n(time limit {timeout_s:.0f} s)\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(_env(), **(env or {})), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code, status = None, "timeout"
            log.write(f"\n[gpu_check: stage {name} killed after {timeout_s:.0f} s]\n")
    return {"status": status, "exit_code": code, "seconds": round(time.perf_counter() - start, 1),
            "time_limit_s": round(timeout_s), "log": log_path.name}


def _kill_group(proc) -> None:
    # SIGINT first: pytest then stops cleanly and still writes its summary and junit XML.
    for sig, wait in ((signal.SIGINT, GRACE_S), (signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tests_stage(out: Path, timeout_s: float) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped: pytest is not installed"}
    notes = []
    if importlib.util.find_spec("hypothesis") is None:
        notes.append("hypothesis is not installed: test modules importing it fail to collect")
    # addopts cleared: setup.cfg's --benchmark-disable needs pytest-benchmark, which may be absent.
    # The sm_80/sm_90 compile check is left out: here every kernel is compiled for real.
    cmd = [sys.executable, "-m", "pytest", "tests", "-o", "addopts=", "-ra", "-v",
           "-p", "no:cacheprovider", "--continue-on-collection-errors", "--durations=15",
           "--deselect", "tests/benchmarks/static/test_main.py::"
           "test_every_registered_kernel_compiles_for_sm80_and_sm90",
           f"--junitxml={out / 'pytest.xml'}"]
    # One config per kernel: every new shape compiles once instead of autotuning all tiles
    # (the results do not depend on the tile; test_conv2d_gpu_tiles runs each one).
    result = run_stage("tests", cmd, out / "pytest.log", timeout_s, env={"CNN_AUTOTUNE": "0"})
    result.update(_junit_counts(out / "pytest.xml"))
    if notes:
        result["notes"] = notes
    return result


def _junit_counts(path: Path) -> dict:
    """passed/failed/errors/skipped from pytest's junit XML, else counted from the -v log."""
    if not path.exists():
        log = path.with_suffix(".log")
        text = log.read_text(errors="replace") if log.exists() else ""
        counts = {k.lower(): len(re.findall(rf"::\S+ {k}\b", text))
                  for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        return {"counts": counts, "counts_from": "pytest.log (no junit XML: pytest was killed)"}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed, errors, skipped = (int(suite.get(k, 0)) for k in
                                      ("tests", "failures", "errors", "skipped"))
    return {"counts": {"passed": total - failed - errors - skipped, "failed": failed,
                       "errors": errors, "skipped": skipped}}


def bench_stage(out: Path, timeout_s: float) -> dict:
    # The row budget leaves room for the last row, the plots and writing the JSON.
    budget = max(10.0, timeout_s - 45)
    cmd = [sys.executable, "-m", "benchmarks", "--out", str(out / "bench"), "--budget-s",
           f"{budget:.0f}", "--warmup-ms", "10", "--rep-ms", "50"]
    result = run_stage("bench", cmd, out / "bench.log", timeout_s)
    summary = out / "bench" / "benchmarks.json"
    csv_path = out / "bench" / "benchmarks.csv"
    if not summary.exists() and csv_path.exists():  # killed: the CSV has the rows it finished
        result["rows"] = max(0, len(csv_path.read_text().splitlines()) - 1)
    if summary.exists():
        rows = json.loads(summary.read_text())
        result["rows"] = len(rows["rows"])
        result["left_out_by_budget"] = len(rows["left_out_by_budget"])
        result["errors"] = sum(r["check"] == "ERROR" for r in rows["rows"])
        result["mismatches"] = sum(r["check"] == "MISMATCH" for r in rows["rows"])
    return result


# The fast recipe first: it is the one that reaches 99% (the seed's needs about 10 epochs).
MNIST_RECIPES = "fast,seed"

# Seconds the compile count may take (it builds launch arguments, compiles nothing).
COUNT_S = 20


def compile_counts(out: Path) -> dict:
    """Compiles and tuning runs of the MNIST run per layout
    (benchmarks.static.compile_count), or why there are none."""
    (out / "mnist").mkdir(parents=True, exist_ok=True)
    counts = {}
    for layout in ("channels_last", "nchw"):
        path = out / "mnist" / f"compile_count_{layout}.json"
        cmd = [sys.executable, "-m", "benchmarks.static.compile_count", "--layout", layout,
               "--json", str(path)]
        # TRITON_INTERPRET=0: the GPU configs, also where no GPU is (the count compiles nothing).
        result = run_stage(f"count {layout}", cmd, out / f"compile_count_{layout}.log", COUNT_S,
                           env={"TRITON_INTERPRET": "0"})
        if path.exists():
            report = json.loads(path.read_text())
            counts[layout] = {k: report[k] for k in ("compiles", "tuning_runs", "steps")}
        else:
            counts[layout] = {"status": result["status"]}
    return counts


def mnist_stage(out: Path, timeout_s: float, mnist_dir, epochs: int) -> dict:
    start = time.perf_counter()
    counts = compile_counts(out)
    timeout_s -= time.perf_counter() - start
    cmd = [sys.executable, "-m", "benchmarks.end_to_end", "--epochs", str(epochs), "--out",
           str(out / "mnist"), "--timeout-s", f"{max(30.0, timeout_s - 15):.0f}",
           "--recipes", MNIST_RECIPES]
    if mnist_dir:
        cmd += ["--mnist-dir", str(mnist_dir)]
    result = run_stage("mnist", cmd, out / "mnist.log", max(30.0, timeout_s))
    result["compile_count"] = counts
    summary = out / "mnist" / "mnist_end_to_end.json"
    if summary.exists():
        report = json.loads(summary.read_text())
        result["runs"] = report["runs"]
        result["fast_recipe"] = report.get("fast_recipe")
        result["note"] = report.get("note")
    return result


def _nvidia_smi(out: Path) -> None:
    try:
        text = subprocess.run(["nvidia-smi", "-q", "-d", "CLOCK,POWER,PERFORMANCE"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        text = f"nvidia-smi unavailable: {exc}"
    (out / "nvidia-smi.txt").write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for every result")
    p.add_argument("--mnist-dir", default=None, help="folder holding the MNIST cache file")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds for all stages together (default 420: under 8 minutes with "
                   "start-up and each stage's 10 s to stop)")
    p.add_argument("--stages", default="tests,bench,mnist", help="which stages, in order")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = [s for s in a.stages.split(",") if s]
    unknown = [s for s in stages if s not in SHARES]
    if unknown:
        p.error(f"unknown stages {unknown}: choose from {', '.join(SHARES)}")
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; this command is for a GPU machine "
              "(python -m benchmarks gives the CPU smoke check)", file=sys.stderr)
        return 2
    report = {"meta": environment(), "command": " ".join(sys.argv), "stages": {}}
    _nvidia_smi(out)
    deadline = time.perf_counter() + a.budget_s
    for i, stage in enumerate(stages):
        later = sum(SHARES[s] for s in stages[i + 1:])
        limit = max(30.0, deadline - time.perf_counter() - later)
        print(f"[gpu_check] {stage}: up to {limit:.0f} s", flush=True)
        if stage == "tests":
            result = tests_stage(out, limit)
        elif stage == "bench":
            result = bench_stage(out, limit)
        else:
            result = mnist_stage(out, limit, a.mnist_dir, a.epochs)
        report["stages"][stage] = result
        print(f"[gpu_check] {stage}: {json.dumps(result, default=str)[:600]}", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    ok = all(r.get("status") in ("ok",) or str(r.get("status")).startswith("skipped")
             for r in report["stages"].values())
    print(f"[gpu_check] results in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

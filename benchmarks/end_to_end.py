"""MNIST end to end: training throughput and time to 99% accuracy, ours against torch eager
(and torch.compile when ``python -m cnn.train`` offers it), on the same model and recipe.

    python -m benchmarks.end_to_end --mnist-dir DIR --epochs 3 --out DIR [--timeout-s 200]
                                    [--no-warmup] [--layout channels_last|nchw]

Each run is ``python -m cnn.train --backend {triton,torch} ...`` in its own process with a
time limit; its metrics.json gives train_images_per_second, test_accuracy and the per-epoch
history. The 10,000 test images are scored once, after training, so the epoch at which 99% is
first reached is read from the validation accuracy of each epoch (the 20% held-out split),
and the test accuracy says whether the finished model is at 99%.

Warm up first, then time: before each timed run a short run of the same backend
(``--limit-train WARMUP_TRAIN --epochs 1``: only full training and evaluation batches, as the
full run has) compiles and autotunes every kernel shape the timed run meets. Compiled kernels
(Triton's cache) and autotuning results (``TRITON_CACHE_AUTOTUNING=1``) stay on disk, so the
timed run's images/s leave out compilation; the warm-up's wall time is reported as its cost.

Layout: on CUDA the runs put model and input in channels_last (the kernels' fast layout) when
``python -m cnn.train`` has a ``--channels-last`` option; otherwise they run NCHW and the
summary says so.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .env import REPO, environment

# lcm(64, 4 x 1000): full batches of 64 and a validation split (a quarter) of full batches of
# 1000, like the full run's 48000/12000 split; the 10000 test images are scored as in the full run.
WARMUP_TRAIN = 8000


def _pythonpath() -> dict:
    """Run from the repo root without installing: the root goes on PYTHONPATH. Autotuning
    results are cached on disk, so a warm-up run's tuning serves the timed run."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), TRITON_CACHE_AUTOTUNING="1")


def train_supports(option: str) -> bool:
    """Whether ``python -m cnn.train --help`` lists ``option`` (e.g. '--compile')."""
    try:
        out = subprocess.run([sys.executable, "-m", "cnn.train", "--help"], cwd=REPO,
                             env=_pythonpath(), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return option in out.stdout


def seconds_to_accuracy(history: dict, target: float = 0.99):
    """Training seconds until the first epoch whose validation accuracy reaches ``target``
    (None if none did). Accuracies given in percent are read as such."""
    accs, times = history.get("val_accuracy", []), history.get("epoch_train_time_s", [])
    total = 0.0
    for acc, t in zip(accs, times, strict=False):
        total += t
        if (acc / 100 if acc > 1 else acc) >= target:
            return total
    return None


def run_training(name: str, extra_args, mnist_dir, epochs: int, out: Path, timeout_s: float):
    """One training run; returns its summary (status 'ok', 'timeout' or 'failed')."""
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cnn.train", *extra_args, "--epochs", str(epochs),
           "--out", str(run_dir), "--overwrite", "--no-plots", "--no-progress"]
    if mnist_dir:
        cmd += ["--data-dir", str(mnist_dir)]
    summary = {"run": name, "command": " ".join(cmd[1:]), "status": "failed"}
    start = time.perf_counter()
    with open(run_dir / "train.log", "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=_pythonpath(), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout_s)
            summary["exit_code"] = proc.returncode
        except subprocess.TimeoutExpired:
            summary["status"] = "timeout"
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    metrics_path = run_dir / "metrics.json"
    if summary.get("exit_code") == 0 and metrics_path.exists():
        m = json.loads(metrics_path.read_text())
        history = m.get("history", {})
        summary.update(
            status="ok",
            train_images_per_second=round(m["train_images_per_second"], 1),
            test_accuracy=m["test_accuracy"],
            reached_99_test=m["test_accuracy"] >= 0.99,
            seconds_to_99_val=seconds_to_accuracy(history),
            train_s=round(sum(history.get("epoch_train_time_s", [])), 2),
            epochs_run=m.get("epochs_run"), device=m.get("device_name"),
        )
    return summary


def run(mnist_dir, epochs: int, out, timeout_s: float = 300.0, backends=None,
        train_args=(), warmup: bool = True, layout: str = "channels_last") -> dict:
    """Train each backend in turn within ``timeout_s`` in all, each after its warm-up run;
    write out/mnist_end_to_end.json. ``train_args`` go to every cnn.train run unchanged (e.g.
    ['--limit-train', '6000']); layout 'channels_last' asks cnn.train for it where offered."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    common = list(train_args)
    if layout == "channels_last":
        if train_supports("--channels-last"):
            common.append("--channels-last")
        else:
            notes.append("NCHW: python -m cnn.train has no --channels-last option")
    runs = [("triton", ["--backend", "triton", *common]),
            ("torch", ["--backend", "torch", *common])]
    if train_supports("--compile"):
        runs.append(("torch_compile", ["--backend", "torch", "--compile", *common]))
    else:
        notes.append("torch.compile not measured: python -m cnn.train has no --compile option")
    if backends:
        runs = [r for r in runs if r[0] in backends]
    deadline = time.perf_counter() + timeout_s
    results = []
    for i, (name, args) in enumerate(runs):
        left = deadline - time.perf_counter()
        if left < 20:
            results.append({"run": name, "status": "not run: time budget spent"})
            continue
        # This run's share of what is left: the first (ours) pays Triton's compilation.
        share = left if i == len(runs) - 1 else left * (0.6 if name == "triton" else 0.5)
        warm = None
        if warmup:
            warm_args = [*args, "--limit-train", str(WARMUP_TRAIN)]
            warm = run_training(f"{name}_warmup", warm_args, mnist_dir, 1, out, share * 0.45)
            share -= warm["wall_s"]
        summary = run_training(name, args, mnist_dir, epochs, out, max(10.0, share))
        if warm is not None:
            summary["warmup"] = {k: warm.get(k) for k in ("status", "wall_s", "command")}
        results.append(summary)
    report = {"meta": environment(), "epochs": epochs, "layout": layout, "warmup": warmup,
              "runs": results}
    if report["meta"]["gpu"].startswith("none"):
        report["warning"] = "no CUDA device: CPU timings, not performance figures"
    if notes:
        report["note"] = "; ".join(notes)
    (out / "mnist_end_to_end.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__
                                .split("\n")[0])
    p.add_argument("--mnist-dir", default=None, help="folder with the MNIST cache (no internet)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/mnist")
    p.add_argument("--timeout-s", type=float, default=300.0, help="for all runs together")
    p.add_argument("--backends", default="", help="comma-separated subset of triton,torch,"
                   "torch_compile")
    p.add_argument("--train-args", default="", help="extra arguments for every cnn.train run, "
                   "e.g. '--limit-train 6000' (quoted)")
    p.add_argument("--no-warmup", action="store_true", help="time the first run, compilation "
                   "included")
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last")
    a = p.parse_args(argv)
    backends = [b for b in a.backends.split(",") if b] or None
    report = run(a.mnist_dir, a.epochs, a.out, a.timeout_s, backends, shlex.split(a.train_args),
                 warmup=not a.no_warmup, layout=a.layout)
    for r in report["runs"]:
        print(json.dumps(r))
    if report.get("note"):
        print(report["note"])
    return 0 if all(r["status"] == "ok" for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())

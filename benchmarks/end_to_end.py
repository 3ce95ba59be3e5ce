"""MNIST end to end: training throughput and time to 99% accuracy, ours against torch eager
(and torch.compile when ``python -m cnn.train`` offers it), on the same model and recipe.

    python -m benchmarks.end_to_end --mnist-dir DIR --epochs 3 --out DIR [--timeout-s 200]
                                    [--warmup all|compiled|none] [--layout channels_last|nchw]

Each run is ``python -m cnn.train --backend {triton,torch} ...`` in its own process with a
time limit; its metrics.json gives train_images_per_second, test_accuracy and the per-epoch
history. The 10,000 test images are scored once, after training, so the epoch at which 99% is
first reached is read from the validation accuracy of each epoch (the 20% held-out split),
and the test accuracy says whether the finished model is at 99%.

Warm up first, then time (``--warmup all``, the default): before each timed run a short run of
the same backend
(``--limit-train WARMUP_TRAIN --epochs 1``: only full training and evaluation batches, as the
full run has) compiles and autotunes every kernel shape the timed run meets. Compiled kernels
(Triton's cache) and autotuning results (``TRITON_CACHE_AUTOTUNING=1``) stay on disk, so the
timed run's images/s leave out compilation; the warm-up's wall time is reported as its cost.
``--warmup compiled`` warms up only ours and torch.compile (torch eager keeps nothing on disk
for a later process, so its warm-up would only cost a process start); ``none`` times cold runs.

Recipes (``--recipes``, default seed): ``seed`` times the seed's recipe (runs triton, torch,
torch_compile, for ``--epochs``); ``fast`` adds ``python -m cnn.train --recipe fast`` for ours,
torch eager and torch.compile (runs triton_fast, torch_fast, torch_compile_fast, for the
recipe's 2 epochs or ``--fast-epochs``), the recipe that reaches 99%: the report's
``fast_recipe`` entry gives each one's training seconds to 99% validation accuracy. Runs go in
the order of the recipes listed.

Each finished run is appended to ``runs.jsonl`` (flushed) and ``mnist_end_to_end.json`` is
rewritten with every run so far (``"finished": false`` until the last), so a killed stage keeps
the runs it finished.

Layout: on CUDA the runs put model and input in channels_last (the kernels' fast layout) when
``python -m cnn.train`` has a ``--channels-last`` option; otherwise they run NCHW and the
summary says so.
"""
import argparse
import functools
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
# The same for the fast recipe's batches of 128: lcm(128, 4 x 1000).
WARMUP_TRAIN_FAST = 16000
RECIPES = ("seed", "fast")


def _pythonpath() -> dict:
    """Run from the repo root without installing: the root goes on PYTHONPATH. Autotuning
    results are cached on disk, so a warm-up run's tuning serves the timed run."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), TRITON_CACHE_AUTOTUNING="1")


@functools.lru_cache(maxsize=1)
def _train_options() -> frozenset:
    """The option strings of ``python -m cnn.train``, read from its parser (no process)."""
    try:
        from cnn.train.cli import build_parser
    except ImportError:
        return frozenset()
    return frozenset(o for action in build_parser()._actions for o in action.option_strings)


def train_supports(option: str) -> bool:
    """Whether ``python -m cnn.train`` has ``option`` (e.g. '--compile')."""
    return option in _train_options()


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
            val_accuracy=(history.get("val_accuracy") or [None])[-1],
            train_s=round(sum(history.get("epoch_train_time_s", [])), 2),
            epochs_run=m.get("epochs_run"), device=m.get("device_name"),
        )
    return summary


FAST_RUNS = (("ours", "triton_fast"), ("torch_eager", "torch_fast"),
             ("torch_compile", "torch_compile_fast"))


def fast_recipe_summary(results) -> dict:
    """The fast recipe's row: ours, torch eager and torch.compile, training seconds to 99%
    validation accuracy, the last validation and the test accuracy, from the runs triton_fast,
    torch_fast and torch_compile_fast."""
    runs = {r["run"]: r for r in results}
    row = {}
    for key, name in FAST_RUNS:
        r = runs.get(name, {})
        row[key] = {"status": r.get("status", "not run"),
                    "seconds_to_99_val": r.get("seconds_to_99_val"),
                    "val_accuracy": r.get("val_accuracy"),
                    "test_accuracy": r.get("test_accuracy"), "train_s": r.get("train_s")}
    ours, theirs = row["ours"]["seconds_to_99_val"], row["torch_eager"]["seconds_to_99_val"]
    row["ours_over_torch_time"] = round(ours / theirs, 3) if ours and theirs else None
    return row


def recipe_runs(recipe: str, epochs: int, common: list, compile_ok: bool,
                fast_epochs=None) -> list:
    """[(name, cnn.train arguments, epochs, warm-up --limit-train)] of one recipe."""
    if recipe == "fast":
        from cnn.train.recipes import RECIPES as TRAIN_RECIPES
        fast = ["--recipe", "fast", *common]
        n = fast_epochs or TRAIN_RECIPES["fast"]["epochs"]
        runs = [("triton_fast", ["--backend", "triton", *fast], n, WARMUP_TRAIN_FAST),
                ("torch_fast", ["--backend", "torch", *fast], n, WARMUP_TRAIN_FAST)]
        if compile_ok:
            runs.append(("torch_compile_fast", ["--backend", "torch", "--compile", *fast], n,
                         WARMUP_TRAIN_FAST))
        return runs
    runs = [("triton", ["--backend", "triton", *common], epochs, WARMUP_TRAIN),
            ("torch", ["--backend", "torch", *common], epochs, WARMUP_TRAIN)]
    if compile_ok:
        runs.append(("torch_compile", ["--backend", "torch", "--compile", *common], epochs,
                     WARMUP_TRAIN))
    return runs


# Shares of the time left that each run gets, its warm-up included: ours pays Triton's
# compilation and autotuning, torch.compile inductor's; torch eager compiles nothing.
RUN_WEIGHTS = {"triton": 2.5, "torch": 0.6, "torch_compile": 1.4}
WARMUP_FRACTION = 0.6  # of a run's share, for its warm-up; what it leaves goes to the run
WARMUPS = ("all", "compiled", "none")


def _kind(name: str) -> str:
    return "torch_compile" if name.startswith("torch_compile") else name.split("_")[0]


def _write_report(out: Path, report: dict) -> None:
    (out / "mnist_end_to_end.json").write_text(json.dumps(report, indent=1))


def run(mnist_dir, epochs: int, out, timeout_s: float = 300.0, backends=None,
        train_args=(), warmup="all", layout: str = "channels_last",
        recipes=("seed",), fast_epochs=None) -> dict:
    """Train each backend in turn within ``timeout_s`` in all, each after its warm-up run;
    write out/mnist_end_to_end.json after every run. ``train_args`` go to every cnn.train run
    unchanged (e.g. ['--limit-train', '6000']); warmup: 'all', 'compiled' (ours and
    torch.compile) or 'none' (True and False mean 'all' and 'none'); layout 'channels_last'
    asks cnn.train for it where offered; recipes: which of RECIPES, in order (see the module
    docstring); fast_epochs: the fast recipe's epochs (default the recipe's)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = {True: "all", False: "none"}.get(warmup, warmup)
    if warmup not in WARMUPS:
        raise ValueError(f"warmup: {warmup!r}, choose from {WARMUPS}")
    notes = []
    common = list(train_args)
    if layout == "channels_last":
        if train_supports("--channels-last"):
            common.append("--channels-last")
        else:
            notes.append("NCHW: python -m cnn.train has no --channels-last option")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"recipes: unknown {unknown}, choose from {RECIPES}")
    compile_ok = train_supports("--compile")
    if not compile_ok:
        notes.append("torch.compile not measured: python -m cnn.train has no --compile option")
    runs = [r for recipe in recipes
            for r in recipe_runs(recipe, epochs, common, compile_ok, fast_epochs)]
    left_out = [r[0] for r in runs if backends and r[0] not in backends]
    runs = [r for r in runs if r[0] not in left_out]
    report = {"meta": environment(), "epochs": epochs, "layout": layout, "warmup": warmup,
              "recipes": list(recipes), "finished": False, "runs": []}
    if report["meta"]["gpu"].startswith("none"):
        report["warning"] = "no CUDA device: CPU timings, not performance figures"
    if notes:
        report["note"] = "; ".join(notes)
    results = report["runs"]
    log = open(out / "runs.jsonl", "w")

    def record(summary):
        results.append(summary)
        log.write(json.dumps(summary) + "\n")
        log.flush()
        if "fast" in recipes:
            report["fast_recipe"] = fast_recipe_summary(results)
        _write_report(out, report)

    for name in left_out:
        record({"run": name, "status": "skipped: not in --backends"})
    deadline = time.perf_counter() + timeout_s
    for i, (name, args, run_epochs, warm_limit) in enumerate(runs):
        left = deadline - time.perf_counter()
        if left < 10:
            record({"run": name, "status": "not run: time budget spent"})
            continue
        weights = [RUN_WEIGHTS[_kind(r[0])] for r in runs[i:]]
        share = left * weights[0] / sum(weights)
        warm = None
        if warmup == "all" or (warmup == "compiled" and _kind(name) != "torch"):
            warm_args = [*args, "--limit-train", str(warm_limit)]
            warm = run_training(f"{name}_warmup", warm_args, mnist_dir, 1, out,
                                share * WARMUP_FRACTION)
            share -= warm["wall_s"]
        summary = run_training(name, args, mnist_dir, run_epochs, out, max(10.0, share))
        if warm is not None:
            summary["warmup"] = {k: warm.get(k) for k in ("status", "wall_s", "command")}
        record(summary)
    log.close()
    report["finished"] = True
    _write_report(out, report)
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
    p.add_argument("--warmup", choices=WARMUPS, default="all", help="which runs warm up "
                   "first: all, compiled (ours and torch.compile) or none")
    p.add_argument("--no-warmup", action="store_true", help="--warmup none: time the first "
                   "run, compilation included")
    p.add_argument("--fast-epochs", type=int, default=None, help="the fast recipe's epochs "
                   "(default the recipe's)")
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last")
    p.add_argument("--recipes", default="seed", help="comma-separated, in order: seed (the "
                   "seed's recipe, --epochs), fast (--recipe fast: 2 epochs to 99%%)")
    a = p.parse_args(argv)
    backends = [b for b in a.backends.split(",") if b] or None
    report = run(a.mnist_dir, a.epochs, a.out, a.timeout_s, backends, shlex.split(a.train_args),
                 warmup="none" if a.no_warmup else a.warmup, layout=a.layout,
                 recipes=[r for r in a.recipes.split(",") if r], fast_epochs=a.fast_epochs)
    for r in report["runs"]:
        print(json.dumps(r))
    if report.get("fast_recipe"):
        print(json.dumps({"fast_recipe": report["fast_recipe"]}))
    if report.get("note"):
        print(report["note"])
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped")
                    for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())

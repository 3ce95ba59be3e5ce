"""GPU readiness without a GPU: every kernel config compiled for sm_80 and sm_90, its SASS read,
and each convolution's main loop set beside a plain GEMM's compiled in the same run.

    python -m benchmarks.static [--targets 80,90] [--kernels forward,nchw] [--dtypes fp16]
                                [--quick] [--json PATH] [--fresh] [--fail-on-spill]

With ``--json PATH`` the compiles whose key is unchanged are taken from the report saved there.
Exit status 1 when a config fails to compile or needs more shared memory than its target gives
one block. What is compiled, the report's columns and targets: benchmarks/README.md.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from cnn.kernels import runtime

from ..env import git_commit
from . import report
from .compile import DEFAULT_TARGETS, collect_jobs, in_own_group, run_in_own_group, run_jobs


def _parse_targets(text: str):
    targets = []
    for t in text.split(","):
        t = t.strip().lower().removeprefix("sm_").removeprefix("sm")
        if not t.isdigit():
            raise argparse.ArgumentTypeError(f"bad target {t!r}: use e.g. 80,90 or sm_90")
        targets.append(int(t))
    return targets


def _names(text: str) -> tuple:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.static",
                                description=__doc__.split("\n")[0])
    p.add_argument("--targets", type=_parse_targets, default=list(DEFAULT_TARGETS),
                   help="compute capabilities, comma separated (default 80,90)")
    p.add_argument("--kernels", type=_names, default=(), help="comma-separated substrings of "
                   "module, kernel, case, layer or layout names to keep (default: all)")
    p.add_argument("--dtypes", type=_names, default=(), help="comma-separated dtypes to keep, "
                   "e.g. fp16,tf32 (default: all)")
    p.add_argument("--quick", action="store_true", help="a representative subset: the first "
                   "case and first config of each kernel, and their references")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, CPUs))")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON; an existing report "
                   "there supplies the unchanged compiles")
    p.add_argument("--fresh", action="store_true", help="recompile everything (ignore the saved "
                   "report at --json PATH)")
    p.add_argument("--fail-on-spill", action="store_true", help="exit 1 when a config spills")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if runtime.INTERPRET or not in_own_group():
        return run_in_own_group("benchmarks.static",
                                sys.argv[1:] if argv is None else list(argv))
    start = time.perf_counter()
    commit = git_commit()  # before the checkpoints write the report into the checkout
    try:
        jobs = collect_jobs(args.targets, args.kernels, args.dtypes, args.quick)
    except Exception as exc:  # a launcher that fails on meta tensors fails the check
        print(f"benchmarks.static: could not collect the kernel cases: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not jobs:
        print("benchmarks.static: no kernel config matches the filters", file=sys.stderr)
        return 1
    saved = {} if args.fresh or not args.json else report.load_saved(args.json)
    print(f"{len(jobs)} kernel configs for {', '.join(f'sm_{t}' for t in args.targets)} on "
          f"{args.jobs} processes ...", flush=True)

    def write(results, partial=False):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_json(
            results, time.perf_counter() - start, args.targets, args.quick, partial=partial,
            commit=commit),
            indent=None if partial else 1))

    def checkpoint(results):  # an interrupted run resumes from here (its keys are reused)
        done = [r for r in results if r is not None]
        report.link_references(results, done)
        write(done, partial=True)

    results = run_jobs(jobs, args.jobs, saved, checkpoint if args.json else None)
    report.link_references(results)
    wall = time.perf_counter() - start
    print(report.format_table(results))
    status, lines = report.summarize(results, args.fail_on_spill)
    for line in lines:
        print(line)
    compiled = [r for r in results if not r.cached]
    print(f"wall time {wall:.1f} s ({len(compiled)} compiled, "
          f"{sum(r.seconds for r in compiled):.1f} s of compiling, "
          f"{sum(r.cpu_seconds for r in compiled):.1f} CPU s)")
    if args.json:
        write(results)
    return status


if __name__ == "__main__":
    sys.exit(main())

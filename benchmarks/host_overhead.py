"""Host overhead per call of our ops: everything but the kernels (argument validation, the
autograd.Function, output allocation, launch-argument building), with every Triton launch
replaced by a no-op. CPU time only, so it runs anywhere; the median of many calls.

    python -m benchmarks.host_overhead [--calls 3000] [--ops conv2d,relu]

Run it in two checkouts to compare them (the issue's budget: within 10 us of the previous
design per call). Speed of the kernels themselves is a GPU measurement (``python -m
benchmarks``), not this.
"""
import argparse
import contextlib
import statistics
import time

import kernels  # noqa: F401  (decides compiled vs interpreted before triton is imported)


@contextlib.contextmanager
def kernels_as_no_ops():
    """Every Triton launch (compiled, autotuned, heuristics, interpreted) does nothing."""
    from triton.runtime import autotuner, interpreter, jit

    targets = [(jit.JITFunction, "run"), (autotuner.Autotuner, "run"),
               (autotuner.Heuristics, "run"), (interpreter.InterpretedFunction, "run")]
    saved = [(cls, name, getattr(cls, name)) for cls, name in targets]
    try:
        for cls, name in targets:
            setattr(cls, name, lambda self, *args, **kwargs: None)
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def tiny_calls():
    """name -> a call of our op on a tiny training-mode input (requires_grad)."""
    import torch

    import cnn
    fn = cnn.functional
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    mean, var = torch.zeros(4), torch.ones(4)
    return {
        "conv2d": lambda: fn.conv2d(x, w, padding=1),
        "relu": lambda: fn.relu(x),
        "max_pool2d": lambda: fn.max_pool2d(x, 2),
        "avg_pool2d": lambda: fn.avg_pool2d(x, 2),
        "batch_norm": lambda: fn.batch_norm(x, mean, var, training=True),
    }


def median_us(call, calls: int, warmup: int = 200) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000, help="timed calls per op (default 3000)")
    p.add_argument("--ops", default="", help="comma-separated subset (default: all)")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1")
    calls = tiny_calls()
    names = [n for n in args.ops.split(",") if n] or list(calls)
    unknown = [n for n in names if n not in calls]
    if unknown:
        p.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(calls)}")
    with kernels_as_no_ops():
        for name in names:
            print(f"{name:12s} {median_us(calls[name], args.calls):7.1f} us per call "
                  f"(median of {args.calls}, kernels as no-ops)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

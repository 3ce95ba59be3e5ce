"""Host overhead per call of our ops against torch's own op on the same tiny inputs.

Ours: everything but the kernels (argument validation, the autograd.Function, output
allocation, launch-argument building), with every Triton launch replaced by a no-op. Torch's:
the whole op, its CPU compute on the tiny inputs included. Both in the same process, timed
in interleaved blocks so machine load hits both alike; the median of many calls.

    python -m benchmarks.host_overhead [--calls 1000] [--ops conv2d,relu,mycnn]
                                       [--json rows.json] [--threads 1] [--cold]

Rows: every public op of cnn.functional (forward, and forward + backward from fresh leaf
inputs), and one MyCNN training step (forward, loss, backward, Adam step) against the same
model on torch's layers. Targets: forward at most 5x torch's, forward + backward at most 1.6x
(on a 2-core machine). Our launchers cache what they compute per call signature
(cnn.kernels.host_cache), so the warm-up leaves every timed call a repeated one; ``--cold``
empties those caches before each of our calls (untimed) to show what a first call costs.
Speed of the kernels themselves is a GPU measurement (``python -m benchmarks``), not this.
"""
import argparse
import contextlib
import json
import os
import statistics
import time

from cnn import kernels  # noqa: F401  (decides compiled vs interpreted before triton is imported)

FWD_TARGET, FWD_BWD_TARGET = 5.0, 1.6
BLOCK = 50  # calls per block; ours' and torch's blocks alternate


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


class Case:
    """One row: ours and torch's forward on leaf inputs (requires_grad), each side with its
    own copies of the inputs and buffers (batch norm's running statistics are updated)."""

    def __init__(self, ours, theirs, make_inputs):
        self.ours, self.theirs, self.make_inputs = ours, theirs, make_inputs

    def side(self, fn):
        """(forward call, forward + backward call, reset) for one side."""
        leaves, buffers = self.make_inputs()
        grad = fn(*leaves, *buffers).detach().clone().fill_(1.0)  # a fixed output gradient

        def forward():
            fn(*leaves, *buffers)

        def forward_backward():
            fn(*leaves, *buffers).backward(grad)

        def reset():
            for leaf in leaves:
                leaf.grad = None
        return forward, forward_backward, reset


def op_cases():
    """name -> Case for every public op of cnn.functional, on tiny training-mode inputs."""
    import torch
    import torch.nn.functional as F

    import cnn
    fn = cnn.functional

    def leaf(*shape):
        return torch.randn(*shape, requires_grad=True)

    def x4():  # (N, C, H, W) = (2, 4, 8, 8)
        return leaf(2, 4, 8, 8)

    def bn_buffers():
        return [torch.zeros(4), torch.ones(4)]

    def bn(f):
        return lambda x, g, b, mean, var: f(x, mean, var, g, b, training=True)

    cases = {
        "conv2d": Case(lambda x, w: fn.conv2d(x, w, padding=1),
                       lambda x, w: F.conv2d(x, w, padding=1),
                       lambda: ([x4(), leaf(4, 4, 3, 3)], [])),
        "conv1d": Case(lambda x, w: fn.conv1d(x, w, padding=1),
                       lambda x, w: F.conv1d(x, w, padding=1),
                       lambda: ([leaf(2, 4, 16), leaf(4, 4, 3)], [])),
        "conv_transpose2d": Case(
            lambda x, w: fn.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
            lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
            lambda: ([x4(), leaf(4, 4, 3, 3)], [])),
        "conv_transpose1d": Case(
            lambda x, w: fn.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1),
            lambda x, w: F.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1),
            lambda: ([leaf(2, 4, 16), leaf(4, 4, 3)], [])),
        "adaptive_avg_pool2d": Case(lambda x: fn.adaptive_avg_pool2d(x, 1),
                                    lambda x: F.adaptive_avg_pool2d(x, 1),
                                    lambda: ([x4()], [])),
        "adaptive_max_pool2d": Case(lambda x: fn.adaptive_max_pool2d(x, 1),
                                    lambda x: F.adaptive_max_pool2d(x, 1),
                                    lambda: ([x4()], [])),
        "avg_pool2d": Case(lambda x: fn.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2),
                           lambda: ([x4()], [])),
        "max_pool2d": Case(lambda x: fn.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2),
                           lambda: ([x4()], [])),
        "relu": Case(fn.relu, F.relu, lambda: ([x4()], [])),
        "batch_norm": Case(bn(fn.batch_norm), bn(F.batch_norm),
                           lambda: ([x4(), leaf(4), leaf(4)], bn_buffers())),
        "conv_bn_relu2d": Case(
            lambda x, w, g, b, mean, var: fn.conv_bn_relu2d(
                x, w, None, mean, var, g, b, padding=1, training=True),
            lambda x, w, g, b, mean, var: F.relu(F.batch_norm(
                F.conv2d(x, w, padding=1), mean, var, g, b, training=True)),
            lambda: ([x4(), leaf(4, 4, 3, 3), leaf(4), leaf(4)], bn_buffers())),
        "conv_bn_act2d": Case(
            lambda x, w, g, b, mean, var: fn.conv_bn_act2d(
                x, w, None, mean, var, g, b, padding=1, training=True, activation="silu"),
            lambda x, w, g, b, mean, var: F.silu(F.batch_norm(
                F.conv2d(x, w, padding=1), mean, var, g, b, training=True)),
            lambda: ([x4(), leaf(4, 4, 3, 3), leaf(4), leaf(4)], bn_buffers())),
        "conv_act2d": Case(lambda x, w: fn.conv_act2d(x, w, padding=1),
                           lambda x, w: F.relu(F.conv2d(x, w, padding=1)),
                           lambda: ([x4(), leaf(4, 4, 3, 3)], [])),
    }
    for name in ("relu6", "leaky_relu", "silu", "hardswish", "gelu"):
        cases[name] = Case(getattr(fn, name), getattr(F, name), lambda: ([x4()], []))
    missing = set(fn.__all__) - set(cases)
    assert not missing, f"cnn.functional ops without a row: {sorted(missing)}"
    return cases


MYCNN = "MyCNN step"
MYCNN_BATCH = 2


def mycnn_side(backend: str):
    """(forward call, training step, reset) for MyCNN on one backend: the trainer's recipe
    (cross entropy, Adam with amsgrad) on a batch of MYCNN_BATCH 28x28 images."""
    import torch
    from torch import nn

    import cnn
    model = cnn.models.MyCNN(backend=backend, seed=0).train()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, amsgrad=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(MYCNN_BATCH, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (MYCNN_BATCH,), generator=generator)

    def forward():
        model(x)

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()
    return forward, step, lambda: None


def timed_pair(ours, theirs, reset_ours, reset_theirs, calls: int, warmup: int):
    """Medians (us) of ours and theirs: after a warm-up of each, alternate blocks of BLOCK
    calls until each has `calls` timed calls. reset runs between calls, untimed."""
    sides = [(ours, reset_ours, []), (theirs, reset_theirs, [])]
    for call, reset, _ in sides:
        for _ in range(warmup):
            call()
            reset()
    while len(sides[0][2]) < calls:
        n = min(BLOCK, calls - len(sides[0][2]))
        for call, reset, times in sides:
            for _ in range(n):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
                reset()
    return tuple(statistics.median(times) * 1e6 for _, _, times in sides)


def emptying_caches(side):
    """side with its reset also emptying our host caches: every timed call a first call."""
    from cnn.kernels.host_cache import clear_caches
    forward, forward_backward, reset = side

    def reset_cold():
        reset()
        clear_caches()
    return forward, forward_backward, reset_cold


def measure(name: str, calls: int, cases=None, cold: bool = False) -> dict:
    """One row: ours and torch's forward and forward + backward medians, ratios, target;
    cold: our caches emptied before each of our calls."""
    if name == MYCNN:
        ours, theirs = mycnn_side("triton"), mycnn_side("torch")
    else:
        case = (cases or op_cases())[name]
        ours, theirs = case.side(case.ours), case.side(case.theirs)
    if cold:
        ours = emptying_caches(ours)
    warmup = min(200, max(10, calls // 5))
    (o_fwd, o_fb, o_reset), (t_fwd, t_fb, t_reset) = ours, theirs
    ours_fwd, torch_fwd = timed_pair(o_fwd, t_fwd, o_reset, t_reset, calls, warmup)
    ours_fb, torch_fb = timed_pair(o_fb, t_fb, o_reset, t_reset, calls, warmup)
    row = {"op": name, "ours_fwd_us": ours_fwd, "torch_fwd_us": torch_fwd,
           "fwd_ratio": ours_fwd / torch_fwd, "ours_fwd_bwd_us": ours_fb,
           "torch_fwd_bwd_us": torch_fb, "fwd_bwd_ratio": ours_fb / torch_fb}
    misses = []
    if row["fwd_ratio"] > FWD_TARGET:
        misses.append(f"fwd {row['fwd_ratio']:.1f}x > {FWD_TARGET:g}x")
    if row["fwd_bwd_ratio"] > FWD_BWD_TARGET:
        misses.append(f"fwd+bwd {row['fwd_bwd_ratio']:.2f}x > {FWD_BWD_TARGET:g}x")
    row["target_met"], row["misses"] = not misses, misses
    return row


COLUMNS = ("op", "ours fwd us", "torch fwd us", "ratio", "ours fwd+bwd us", "torch fwd+bwd us",
           "ratio", "target")


def header(calls: int, cold: bool = False) -> list:
    import torch
    caches = ("COLD: our host caches emptied before each of our calls (first-call cost)."
              if cold else "Warm: our host caches hold every signature (repeated calls).")
    return [
        f"Host overhead against torch, median of {calls} calls per cell, interleaved blocks "
        f"of {BLOCK} (torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
        f"CPUs {os.cpu_count()}).",
        "Ours: kernels as no-ops (host path only). Torch's: the whole op, INCLUDING its CPU "
        "compute on the tiny inputs.",
        "Ops: tiny inputs (N=2, C=4, 8x8; 1-D length 16), requires_grad; fwd+bwd = forward "
        "then backward with a fixed output gradient.",
        f"{MYCNN}: MyCNN on a batch of {MYCNN_BATCH}; fwd = model(x), fwd+bwd = zero_grad, "
        "forward, cross entropy, backward, Adam step.",
        f"Targets: fwd ratio <= {FWD_TARGET:g}x, fwd+bwd ratio <= {FWD_BWD_TARGET:g}x "
        "(on a 2-core machine).",
        caches,
    ]


def format_table(rows: list) -> list:
    cells = [COLUMNS] + [(
        r["op"], f"{r['ours_fwd_us']:.1f}", f"{r['torch_fwd_us']:.1f}",
        f"{r['fwd_ratio']:.2f}x", f"{r['ours_fwd_bwd_us']:.1f}", f"{r['torch_fwd_bwd_us']:.1f}",
        f"{r['fwd_bwd_ratio']:.2f}x",
        "met" if r["target_met"] else "MISSED: " + "; ".join(r["misses"])) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in cells:
        numbers = zip(row[1:-1], widths[1:], strict=True)
        left = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]
        lines.append("  ".join(left + [row[-1]]))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1000,
                   help="timed calls per cell (default 1000)")
    p.add_argument("--ops", default="", help="comma-separated subset (default: all), "
                   f"'{MYCNN}' spelt mycnn")
    p.add_argument("--json", default="", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--cold", action="store_true",
                   help="empty our host caches before each of our calls (untimed): the cost "
                   "of a first call, against the default's repeated calls")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads while timing (default 1: on a shared machine "
                   "torch's thread pool wake-ups cost milliseconds per tiny op)")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    cases = op_cases()
    known = list(cases) + ["mycnn"]
    names = [n for n in args.ops.split(",") if n] or known
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with kernels_as_no_ops():
            rows = [measure(MYCNN if n == "mycnn" else n, args.calls, cases, args.cold)
                    for n in names]
        title = header(args.calls, args.cold)
    finally:
        torch.set_num_threads(threads)
    print("\n".join(title + [""] + format_table(rows)))
    if args.json:
        meta = {"calls": args.calls, "block": BLOCK, "torch": torch.__version__,
                "torch_threads": args.threads, "cpus": os.cpu_count(),
                "fwd_target": FWD_TARGET, "fwd_bwd_target": FWD_BWD_TARGET,
                "mycnn_batch": MYCNN_BATCH, "cold": args.cold,
                "note": "ours: kernels as no-ops; torch's: includes its CPU compute"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

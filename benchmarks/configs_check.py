"""The GPU check's first stage: every GPU config of every convolution, pooling, batch-norm
and ReLU kernel, launched on small shapes in each layout and dtype and compared with torch,
before anything is timed.

    python -m benchmarks.configs_check --out DIR [--jobs J] [--rehearse]

Why first: an autotuner picks the fastest config whether or not it is right, and the
interpreter cannot see a miscompile (inductor's conv template gave wrong results at 8 warps).

Convolutions: each tile of the GPU lists in ``cnn.kernels.conv2d`` (IMPLICIT_GEMM_TILES_GPU for
the forward and the input gradient; WGRAD_TILES_GPU for the weight gradient, FP32_IEEE_TILES
in IEEE fp32, the tiles its pruning swaps in; DEPTHWISE_TILES_GPU for the three depthwise
kernels) is forced on the undecorated kernel with the launcher's own arguments, as
tests/kernels/test_conv2d_gpu_tiles.py does, on problems whose sizes leave partial tiles on
every axis: tap-major (20 input channels) and flattened (3). The weight gradients run their
reduction split over 3 partial slots and then the sum. Pooling, batch norm and ReLU take one
block size per launch, the launcher's: their public ops run forward and backward (batch norm
in training and evaluation), three times, the third through the plans' direct launches.
dtypes fp32 (IEEE), tf32, fp16, bf16 (pooling, batch norm and ReLU have no TF32 path);
layouts nchw and channels_last. Reference: torch's op in float64 on the same
values; error ||ours - torch|| / ||torch|| over the output and every gradient, within
``benchmarks.ops.TOLERANCE``.

Output: DIR/shard_<k>.jsonl, one row per case as it finishes (flushed, so a killed stage keeps
what it did), then DIR/configs.json (every row; the cases enumerated and run) and
DIR/configs.csv. ``--jobs J`` runs J processes, each a J-th of the cases (every case is a
compile on a GPU; they share the GPU). ``--rehearse``: the interpreter runs any tile but
slowly, so only the first GPU config of each kernel runs, in fp32 (``REHEARSAL_SUBSET``); the
JSON says so and counts the rest as not run.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from cnn import kernels  # noqa: F401  (decides compiled vs interpreted before triton)

from .env import REPO, environment
from .ops import TOLERANCE, TORCH_DTYPES, dtype_context, relative_error

CONV_KERNELS = ("forward", "input_grad", "weight_grad")
DEPTHWISE_KERNELS = ("depthwise_forward", "depthwise_input_grad", "depthwise_weight_grad")
POOL_BN_OPS = ("max_pool2d", "avg_pool2d", "batch_norm.train", "batch_norm.eval", "relu")
DTYPES = ("bf16", "tf32", "fp16", "fp32")
LAYOUTS = ("channels_last", "nchw")
# (N, C_in, H, W, C_out, kernel, stride, padding): K = 9*20 = 180 and M = 2*5*5 = 50 leave a
# partial tile on every axis; 3 input channels take the flattened (packed-pixel) loops.
CONV_PROBLEMS = {"3x3s2": (2, 20, 9, 9, 24, 3, 2, 1), "stem3": (2, 3, 9, 9, 24, 3, 2, 1)}
# (N, C, H, W, channel multiplier): 40 output channels and 40 output pixels, partial tiles.
DEPTHWISE_PROBLEM = (2, 20, 9, 7, 2)
# 40 samples of 5 channels, 17x19: several pixel blocks per sample, more batch-norm partials
# than one reduction step merges.
POOL_BN_SHAPE = (40, 5, 17, 19)
REHEARSAL_POOL_BN_SHAPE = (4, 5, 17, 19)  # the interpreter's cost is per program
REHEARSAL_SUBSET = ("the first GPU config of each kernel, fp32 only, in one layout each "
                    "(alternating), pooling and batch norm on 4 samples")
FIELDS = ("case", "kernel", "problem", "dtype", "layout", "config", "check", "max_rel_err",
          "seconds", "error")


def _tiles():
    from cnn.kernels.conv2d.configs import IMPLICIT_GEMM_TILES_GPU
    from cnn.kernels.conv2d.depthwise import DEPTHWISE_TILES_GPU
    from cnn.kernels.conv2d.weight_grad import FP32_IEEE_TILES, WGRAD_TILES_GPU
    return IMPLICIT_GEMM_TILES_GPU, WGRAD_TILES_GPU, FP32_IEEE_TILES, DEPTHWISE_TILES_GPU


def enumerate_cases(pool_bn_shape=POOL_BN_SHAPE) -> list:
    """Every case, most used first (bf16 channels_last ... fp32 NCHW), as dicts of kernel,
    problem, dtype, layout and config (a tile tuple, or 'launcher' for pooling/batch norm)."""
    gemm, wgrad, ieee, depthwise = _tiles()
    cases = []
    for dtype in DTYPES:
        for layout in LAYOUTS:
            for problem in CONV_PROBLEMS:
                for kernel in CONV_KERNELS:
                    tiles = gemm if kernel != "weight_grad" else (ieee if dtype == "fp32"
                                                                  else wgrad)
                    cases += [dict(kernel=kernel, problem=problem, config=t) for t in tiles]
            cases += [dict(kernel=k, problem="depthwise3x3s2", config=t)
                      for k in DEPTHWISE_KERNELS for t in depthwise]
            if dtype != "tf32":
                cases += [dict(kernel=op, problem="x".join(map(str, pool_bn_shape)),
                               config="launcher") for op in POOL_BN_OPS]
            for case in cases:
                case.setdefault("dtype", dtype)
                case.setdefault("layout", layout)
    for case in cases:
        config = case["config"]
        label = config if isinstance(config, str) else "-".join(map(str, config))
        case["case"] = f"{case['kernel']}/{case['problem']}/{case['dtype']}/{case['layout']}/" \
                       f"{label}"
    return cases


def rehearsal_subset(cases) -> list:
    """REHEARSAL_SUBSET: the i-th (kernel, problem) in LAYOUTS[i % 2]."""
    order, kept = {}, []
    for c in cases:
        if c["dtype"] != "fp32":
            continue
        i = order.setdefault((c["kernel"], c["problem"]), len(order))
        if c["layout"] == LAYOUTS[i % 2] and not any(
                k["kernel"] == c["kernel"] and k["problem"] == c["problem"] for k in kept):
            kept.append(c)
    return kept


# ---------------------------------------------------------------------------------------------
# Running one case

def _innermost(kernel):
    from triton.runtime.autotuner import Autotuner, Heuristics
    while isinstance(kernel, (Autotuner, Heuristics)):
        kernel = kernel.fn
    return kernel


def _launch_tiles(kernel, grid, args, config):
    bm, bn, bk, warps, stages = config
    _innermost(kernel)[grid](**args, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
                             num_stages=stages)


def _randn(shape, device, dtype, layout="nchw"):
    t = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _conv_case(case, device, dtype):
    import importlib

    from cnn.kernels.conv2d.geometry import Conv2dGeometry
    n, c_in, h, w, c_out, k, s, p = CONV_PROBLEMS[case["problem"]]
    x = _randn((n, c_in, h, w), device, dtype, case["layout"])
    weight = _randn((c_out, c_in, k, k), device, dtype) / (c_in * k * k) ** 0.5
    bias = _randn((c_out,), device, dtype)
    g = Conv2dGeometry.from_shapes(x.shape, weight.shape, (s, s), (p,) * 4, (1, 1), 1)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y_ref = F.conv2d(x64, w64, bias.double(), stride=s, padding=p)
    dy = _randn(y_ref.shape, device, dtype, case["layout"])
    module = importlib.import_module(f"cnn.kernels.conv2d.{case['kernel']}")
    if case["kernel"] == "forward":
        from cnn.kernels.activation_math import RELU
        y, _, grid, args = module.launch_arguments(x, weight, bias, g, activation=RELU)
        _launch_tiles(module.conv2d_forward_kernel, grid, args, case["config"])
        return relative_error(y, y_ref.relu())
    if case["kernel"] == "input_grad":
        (dx_ref,) = torch.autograd.grad(y_ref, (x64,), dy.double())
        dx, grid, args = module.launch_arguments(dy, weight, x, g)
        _launch_tiles(module.conv2d_input_grad_kernel, grid, args, case["config"])
        return relative_error(dx, dx_ref)
    (dw_ref,) = torch.autograd.grad(y_ref, (w64,), dy.double())
    dw, db, launches = module.launch_arguments(dy, x, weight, g, need_bias=True, split=3)
    (gemm, grid, args), (reduce, reduce_grid, reduce_args) = launches
    _launch_tiles(gemm, grid, args, case["config"])
    reduce[reduce_grid](**reduce_args)
    return relative_error((dw, db), (dw_ref, dy.double().sum((0, 2, 3))))


def _depthwise_case(case, device, dtype):
    from cnn.kernels.conv2d import depthwise
    from cnn.kernels.conv2d.geometry import Conv2dGeometry
    from cnn.kernels.runtime import cdiv
    n, c, h, w, mult = DEPTHWISE_PROBLEM
    x = _randn((n, c, h, w), device, dtype, case["layout"])
    weight = _randn((c * mult, 1, 3, 3), device, dtype) / 3
    bias = _randn((c * mult,), device, dtype)
    g = Conv2dGeometry.from_shapes(x.shape, weight.shape, (2, 2), (1, 1, 1, 1), (1, 1), c)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y_ref = F.conv2d(x64, w64, bias.double(), stride=2, padding=1, groups=c)
    dy = _randn(y_ref.shape, device, dtype, case["layout"])
    pixels, block_c, warps = case["config"]
    tiles = dict(BLOCK_C=block_c, num_warps=warps)
    if case["kernel"] == "depthwise_forward":
        y, _, grid, args = depthwise.forward_launch_arguments(x, weight, bias, g)
        _innermost(depthwise.depthwise_forward_kernel)[grid](**args, BLOCK_P=pixels, **tiles)
        return relative_error(y, y_ref)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x64, w64), dy.double())
    if case["kernel"] == "depthwise_input_grad":
        dx, grid, args = depthwise.input_grad_launch_arguments(dy, weight, x, g)
        _innermost(depthwise.depthwise_input_grad_kernel)[grid](**args, BLOCK_P=pixels, **tiles)
        return relative_error(dx, dx_ref)
    dw, db, launches = depthwise.weight_grad_launch_arguments(dy, x, weight, g, need_bias=True,
                                                              split=3)
    (_, _, args), (reduce, reduce_grid, reduce_args) = launches
    grid = (cdiv(g.out_channels, block_c), g.kernel_h * g.kernel_w, 3)
    _innermost(depthwise.depthwise_weight_grad_kernel)[grid](**args, BLOCK_R=pixels, **tiles)
    reduce[reduce_grid](**reduce_args)
    return relative_error((dw, db), (dw_ref, dy.double().sum((0, 2, 3))))


def _pool_bn_case(case, device, dtype):
    """The public op (forward, then every gradient) against torch's in float64, three
    times: a signature's first call (its checks), the first call of its plan (launches
    through kernel.run) and a repeated call (on a GPU, the plan's direct launches,
    cnn.kernels.direct_launch). The largest error of the three."""
    return max(_pool_bn_call(case, device, dtype) for _ in range(3))


def _pool_bn_call(case, device, dtype):
    import cnn
    shape = tuple(map(int, case["problem"].split("x")))
    x = _randn(shape, device, dtype, case["layout"])
    c = shape[1]
    params = [_randn((c,), device, dtype) * 0.5 + 1, _randn((c,), device, dtype)]
    stats = [_randn((c,), device, torch.float32) * 0.1, torch.rand(c, device=device) + 0.5]
    op = case["kernel"]

    def run(functional, t, p, running):
        if op == "max_pool2d":
            return functional.max_pool2d(t, 3, 2, 1)
        if op == "avg_pool2d":
            return functional.avg_pool2d(t, 2, ceil_mode=True)
        if op == "relu":
            return functional.relu(t)
        running = [r.clone() for r in running]
        return functional.batch_norm(t, *running, *p, training=op.endswith("train"),
                                     momentum=0.1, eps=1e-5)

    inputs = [x, *params] if op.startswith("batch_norm") else [x]
    ours_in = [t.detach().clone().requires_grad_() for t in inputs]
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    y = run(cnn.functional, ours_in[0], ours_in[1:], [s.to(dtype) for s in stats])
    y_ref = run(F, ref_in[0], ref_in[1:], [s.double() for s in stats])
    dy = _randn(y_ref.shape, device, dtype, case["layout"])
    grads = torch.autograd.grad(y, ours_in, dy)
    grads_ref = torch.autograd.grad(y_ref, ref_in, dy.double())
    return relative_error((y, *grads), (y_ref, *grads_ref))


def run_case(case, device) -> dict:
    """One case: its row with check 'ok', 'MISMATCH' or 'ERROR'."""
    row = {k: case[k] for k in ("case", "kernel", "problem", "dtype", "layout")}
    row["config"] = case["config"] if isinstance(case["config"], str) else list(case["config"])
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        dtype = TORCH_DTYPES[case["dtype"]]
        with dtype_context(case["dtype"]):
            if case["kernel"] in CONV_KERNELS:
                err = _conv_case(case, device, dtype)
            elif case["kernel"] in DEPTHWISE_KERNELS:
                err = _depthwise_case(case, device, dtype)
            else:
                err = _pool_bn_case(case, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        row["max_rel_err"] = f"{err:.2e}"
        row["check"] = "ok" if err <= TOLERANCE[case["dtype"]] else "MISMATCH"
        row["error"] = ""
    except Exception as exc:  # a failing case is recorded and the others go on
        row["check"] = "ERROR"
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        row["traceback"] = traceback.format_exc()[-2000:]
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def run_shard(cases, path: Path, device) -> None:
    """Run ``cases``, appending each row to ``path`` (JSON lines) and flushing it."""
    with open(path, "a") as out:
        for case in cases:
            out.write(json.dumps(run_case(case, device)) + "\n")
            out.flush()


# ---------------------------------------------------------------------------------------------
# The stage: shards, then one merged file

def read_rows(out: Path) -> list:
    """Every row the shards wrote so far (a torn last line of a killed shard is skipped)."""
    rows = []
    for path in sorted(Path(out).glob("shard_*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def summarize(rows, enumerated: int) -> dict:
    checks = [r["check"] for r in rows]
    return {"enumerated": enumerated, "run": len(rows), "ok": checks.count("ok"),
            "mismatches": checks.count("MISMATCH"), "errors": checks.count("ERROR"),
            "bad": [f"{r['case']}: {r['check']} {r.get('max_rel_err', '')} {r['error']}"
                    .rstrip() for r in rows if r["check"] != "ok"][:20]}


def write_merged(out: Path, rows, enumerated: int, subset) -> dict:
    import csv
    summary = summarize(rows, enumerated)
    (out / "configs.json").write_text(json.dumps(
        {"meta": environment(), "subset": subset, **summary, "rows": rows}, indent=1))
    with open(out / "configs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(r, config="-".join(map(str, r["config"]))
                                 if isinstance(r["config"], list) else r["config"]))
    return summary


def _device():
    use_cuda = torch.cuda.is_available() and not kernels.runtime.INTERPRET
    return torch.device("cuda" if use_cuda else "cpu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.configs_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the rows and the merged files")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes, each compiling and running a share of the cases")
    p.add_argument("--rehearse", action="store_true", help=f"only {REHEARSAL_SUBSET}")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # k/J: one worker's share
    p.add_argument("--list", action="store_true", help="print the cases, run nothing")
    a = p.parse_args(argv)
    cases = enumerate_cases()
    enumerated = len(cases)
    subset = None
    if a.rehearse:
        cases = rehearsal_subset(enumerate_cases(REHEARSAL_POOL_BN_SHAPE))
        subset = REHEARSAL_SUBSET
    if a.list:
        print("\n".join(c["case"] for c in cases))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.shard:
        k, jobs = map(int, a.shard.split("/"))
        run_shard(cases[k::jobs], out / f"shard_{k}.jsonl", _device())
        return 0
    for old in out.glob("shard_*.jsonl"):
        old.unlink()
    jobs = max(1, min(a.jobs, len(cases)))
    print(f"configs: {len(cases)} of {enumerated} cases"
          + (f" (rehearsal: {subset})" if subset else "") + f" in {jobs} process(es)",
          flush=True)
    if jobs == 1:
        run_shard(cases, out / "shard_0.jsonl", _device())
    else:
        cmd = [sys.executable, "-m", "benchmarks.configs_check", "--out", str(out)]
        cmd += ["--rehearse"] if a.rehearse else []
        workers = [subprocess.Popen([*cmd, "--shard", f"{k}/{jobs}"], cwd=REPO)
                   for k in range(jobs)]
        for w in workers:
            w.wait()
    summary = write_merged(out, read_rows(out), enumerated, subset)
    print(f"configs: {summary['run']} run, {summary['ok']} ok, {summary['mismatches']} "
          f"mismatches, {summary['errors']} errors")
    for line in summary["bad"]:
        print(f"  {line}")
    complete = summary["run"] == len(cases)
    return 0 if complete and summary["ok"] == summary["run"] else 1


if __name__ == "__main__":
    sys.exit(main())

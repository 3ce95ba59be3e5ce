"""pytest-benchmark entry points: ``python -m pytest benchmarks --benchmark-enable``.

Outside the CI suite (setup.cfg's testpaths is tests/), so they run only when asked for. With
CUDA they time representative shapes, ours and torch's in one benchmark group per case, each
call synchronised. Without CUDA (or with --benchmark-disable, setup.cfg's default) each runs
once on a tiny shape through the interpreter: a smoke test of the entry points, not a number
to read. ``python -m benchmarks`` is the measurement of record (do_bench, CUDA events, CSV).
"""
import pytest

from cnn import kernels  # noqa: F401  (before triton: picks the interpreter without CUDA)

pytest.importorskip("pytest_benchmark")

import torch  # noqa: E402

from benchmarks import ops, shapes  # noqa: E402

GPU = torch.cuda.is_available() and not kernels.runtime.INTERPRET
DEVICE = torch.device("cuda" if GPU else "cpu")
CONV = [shapes.resnet18_convs()[3], shapes.mnist_convs(256)[1]] if GPU else [shapes.SMOKE_CONV]
ACT = [shapes.resnet18_activations()[0]] if GPU else [shapes.SMOKE_ACTIVATION]
DTYPE = "bf16" if GPU else "fp32"
CASES = [(op, s) for op in ("conv2d.fwd", "conv2d.dgrad", "conv2d.wgrad",
                            "conv_bn_relu.train.fwd+bwd", "conv_bn_relu.eval.fwd") for s in CONV]
CASES += [(op, s) for op in ("max_pool2d.fwd", "max_pool2d.bwd", "batch_norm.fwd") for s in ACT]


@pytest.mark.parametrize("side", ["ours", "torch"])
@pytest.mark.parametrize("op,shape", CASES, ids=[f"{op}-{s.name}" for op, s in CASES])
def test_bench(benchmark, op, shape, side):
    bench = ops.Bench(op, shape, DTYPE, "channels_last")
    benchmark.group = f"{op} {shape.name} {DTYPE}"
    benchmark.extra_info.update(flops=bench.flops, bytes=bench.nbytes)
    with ops.dtype_context(DTYPE):
        ours_fn, torch_fn, _ = bench.make(DEVICE)
        fn = ours_fn if side == "ours" else torch_fn

        def call():
            fn()
            if GPU:
                torch.cuda.synchronize()

        call()  # compilation and autotuning stay out of the timing
        benchmark(call)

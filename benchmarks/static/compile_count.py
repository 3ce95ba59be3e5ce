"""How many compiles and autotuning runs a sequence of convolution calls triggers on a GPU,
counted from the launchers' own autotune keys and argument specialisations (no GPU needed).

    python -m benchmarks.static.compile_count [--layout nchw|channels_last] [--train N]
                                              [--batch-size B]

Triton compiles a kernel once per (config, specialisation) and tunes once per autotune key:
    autotune key      the values of the autotuner's ``key`` arguments and the dtype of every
                      tensor argument (as ``Autotuner.run`` builds it); a new key benchmarks every
                      config the kernel keeps after pruning, each compiled for the call's
                      specialisation; one kept config means no tuning run
    specialisation    pointer dtypes, ints equal to 1 (constants) or divisible by 16, i32/i64,
                      and the constexprs (``cases.launch_signature``), except for the
                      parameters marked ``do_not_specialize``
A call with a tuned key but another specialisation compiles the chosen config once more.

``mnist_report`` counts the sequence of the GPU check's MNIST run (python -m cnn.train: training
batches, the last partial batch, evaluation batches; both convolutions, forward and backward).
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass, field

import torch
from cnn.kernels import runtime

from .. import shapes
from .cases import (
    EXAMPLE_MULTIPROCESSORS,
    conv_geometry,
    kept_configs,
    launch_signature,
    launches,
    unwrap,
)


def _autotuner(kernel):
    from triton.runtime.autotuner import Autotuner
    obj = kernel
    while obj is not None and not isinstance(obj, Autotuner):
        obj = getattr(obj, "fn", None)
    return obj


def autotune_key(kernel, args: dict):
    """The key ``Autotuner.run`` caches the tuned config under (None: not autotuned)."""
    tuner = _autotuner(kernel)
    if tuner is None or len(tuner.configs) <= 1:
        return None
    named = {k: v for k, v in args.items() if k in tuner.arg_names}
    key = [named[k] for k in tuner.keys if k in named]
    key += [str(v.dtype) for v in named.values() if hasattr(v, "dtype")]
    return tuple(key)


def specialisation(kernel, args: dict) -> str:
    """What a launch specialises on (see the module docstring), as a comparable string."""
    fn = unwrap(kernel)[0]
    plain = {p.name for p in fn.params if getattr(p, "do_not_specialize", False)}
    signature, constexprs = launch_signature(kernel, {k: v for k, v in args.items()
                                                      if k not in plain})
    for name in plain & set(args):
        value = args[name]
        signature[name] = "i32" if isinstance(value, int) and -2**31 <= value < 2**31 else "i64"
    return json.dumps([signature, sorted((k, str(v)) for k, v in constexprs.items())],
                      sort_keys=True)


@dataclass
class CompileCounter:
    """Feed it (kernel, args) calls; it counts what Triton would compile and tune."""

    compiles: int = 0
    tuning_runs: int = 0
    per_kernel: dict = field(default_factory=dict)
    _compiled: set = field(default_factory=set)
    _tuned: dict = field(default_factory=dict)

    def call(self, kernel, args: dict) -> None:
        name = unwrap(kernel)[0].__name__
        stats = self.per_kernel.setdefault(name, {"calls": 0, "compiles": 0, "tuning_runs": 0})
        stats["calls"] += 1
        spec = specialisation(kernel, args)
        key = autotune_key(kernel, args)
        configs = kept_configs(kernel, args)
        if key is not None and len(configs) > 1:
            tuned = (name,) + key
            if tuned not in self._tuned:
                self._tuned[tuned] = spec
                self.tuning_runs += 1
                stats["tuning_runs"] += 1
                new = [(name, i, spec) for i in range(len(configs))]
            else:  # the tuned config, compiled again if this call specialises otherwise
                new = [] if self._tuned[tuned] == spec else [(name, ("best", tuned), spec)]
        else:
            new = [(name, repr(configs[0] and configs[0].all_kwargs()), spec)]
        for item in new:
            if item not in self._compiled:
                self._compiled.add(item)
                self.compiles += 1
                stats["compiles"] += 1

    def summary(self) -> dict:
        return {"compiles": self.compiles, "tuning_runs": self.tuning_runs,
                "per_kernel": self.per_kernel}


def _conv_calls(batch: int, layout, dtype, backward: bool):
    """(kernel, args) of MyCNN's convolutions (benchmarks/shapes.py) on one batch: forward, and
    on a training step both weight gradients and conv2's input gradient (the images need
    none)."""
    import importlib

    calls = []
    for index, shape in enumerate(shapes.mnist_convs(batch)):
        x = torch.empty((batch, shape.c_in, shape.h, shape.w), device="meta", dtype=dtype,
                        memory_format=layout)
        w = torch.empty((shape.c_out, shape.c_in, shape.kernel, shape.kernel), device="meta",
                        dtype=dtype, memory_format=layout)
        b = torch.empty((shape.c_out,), device="meta", dtype=dtype)
        g = conv_geometry(shape)
        module = importlib.import_module("cnn.kernels.conv2d.forward")
        calls += launches(module, module.launch_arguments(x, w, b, g))
        if backward:
            dy = torch.empty(g.output_shape, device="meta", dtype=dtype, memory_format=layout)
            module = importlib.import_module("cnn.kernels.conv2d.weight_grad")
            calls += launches(module, module.launch_arguments(
                dy, x, w, g, need_bias=True, sm_count=EXAMPLE_MULTIPROCESSORS))
            if index > 0:
                module = importlib.import_module("cnn.kernels.conv2d.input_grad")
                calls += launches(module, module.launch_arguments(dy, w, x, g))
    return calls


def mnist_batches(train: int = 48000, batch_size: int = 64, validation: int = 12000,
                  test: int = 10000, eval_batch_size: int = 1000):
    """[(label, batch, training)] of the distinct batches a ``python -m cnn.train`` run sees:
    full training batches, the last partial one, the evaluation batches (and their last)."""
    out = [("train", batch_size, True)]
    if train % batch_size:
        out.append(("train last partial", train % batch_size, True))
    out.append(("eval", eval_batch_size, False))
    for name, n in (("validation", validation), ("test", test)):
        if n % eval_batch_size:
            out.append((f"{name} last partial", n % eval_batch_size, False))
    return out


def mnist_report(layout=torch.contiguous_format, dtype=torch.float32, **batches) -> dict:
    """Compiles and tuning runs of the MNIST run, in total and after each distinct batch."""
    counter = CompileCounter()
    steps = []
    for label, batch, training in mnist_batches(**batches):
        for kernel, args in _conv_calls(batch, layout, dtype, training):
            counter.call(kernel, args)
        steps.append({"batches": label, "batch": batch, "compiles": counter.compiles,
                      "tuning_runs": counter.tuning_runs})
    return dict(counter.summary(), steps=steps, layout=str(layout).removeprefix("torch."),
                dtype=str(dtype).removeprefix("torch."))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.static.compile_count",
                                description=__doc__.split("\n")[0])
    p.add_argument("--layout", choices=("nchw", "channels_last"), default="nchw")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--train", type=int, default=48000, help="training images (default: the "
                   "seed's 80%% of 60000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if runtime.INTERPRET:  # the GPU configs exist only in a compiled-mode process
        import subprocess
        env = dict(os.environ, TRITON_INTERPRET="0")
        argv = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, "-m", "benchmarks.static.compile_count", *argv],
                              env=env).returncode
    layout = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    report = mnist_report(layout, dtype, train=a.train, batch_size=a.batch_size,
                          eval_batch_size=a.eval_batch_size)
    for step in report["steps"]:
        print(f"after {step['batches']} (batch {step['batch']}): {step['compiles']} compiles, "
              f"{step['tuning_runs']} tuning runs")
    for name, stats in report["per_kernel"].items():
        print(f"  {name}: {stats}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

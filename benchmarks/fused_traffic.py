"""Fused conv+BN+ReLU against torch's three ops without timing anything: kernel launches and
bytes of activation traffic per forward.

Launches are counted, not assumed: ours by wrapping every Triton kernel's launch, torch's by
recording the aten compute ops its modules dispatch (each is at least one kernel launch on a
GPU, so torch's count is a lower bound; allocations and views are not counted). Bytes are the
minimum activation traffic each side's kernels must move, with x: (N, C_in, H, W) and
y: (N, C_out, OH, OW) of e bytes per element (weights, per-channel vectors and statistics
partials are ignored: they are small):
    torch, training   conv x -> y, BN statistics read y, BN normalize y -> z, ReLU z -> out:
                      |x| + 6|y|   (read x, write y, read y twice, write z, read z, write out)
    torch, eval       conv x -> y, BN y -> z, ReLU z -> out:               |x| + 5|y|
    ours, training    conv x -> y with the statistics in its epilogue, normalize+ReLU y -> out:
                      |x| + 3|y|
    ours, eval        conv x -> out with batch norm and ReLU in its epilogue: |x| + |y|
"""
from torch.utils._python_dispatch import TorchDispatchMode

from cnn import kernels

# Allocations and views: no kernel launch on a GPU.
_FREE_OPS = {"empty", "empty_strided", "empty_like", "view", "_unsafe_view", "as_strided", "t",
             "unsqueeze", "alias", "detach"}


class _ComputeOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in _FREE_OPS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def count_our_launches(module, x) -> list:
    """Names of the Triton kernels one forward of ``module`` launches (after a warm-up call,
    so autotuning's benchmark launches are not counted)."""
    module(x)
    launched, originals = [], {}
    for kernel in kernels.runtime.launchable_kernels():
        originals[kernel] = kernel.run

        def run(*args, _orig=kernel.run, _name=kernel.fn.__name__, **kwargs):
            launched.append(_name)
            return _orig(*args, **kwargs)
        kernel.run = run
    try:
        module(x)
    finally:
        for kernel, run in originals.items():
            kernel.run = run
    return launched


def count_torch_ops(module, x) -> list:
    with _ComputeOps() as recorder:
        module(x)
    return recorder.ops


def activation_bytes(shape, element_bytes: int) -> dict:
    """Minimum activation bytes per forward (see the module docstring) for a ConvShape."""
    oh, ow = shape.out_hw
    x = shape.batch * shape.c_in * shape.h * shape.w * element_bytes
    y = shape.batch * shape.c_out * oh * ow * element_bytes
    return {"torch_train": x + 6 * y, "ours_train": x + 3 * y,
            "torch_eval": x + 5 * y, "ours_eval": x + y}


def report_rows(conv_shapes, element_bytes: int = 2):
    """One row per shape: launches per forward (counted once on a tiny instance of the layer:
    the count does not depend on the sizes) and activation bytes (bf16/fp16 by default)."""
    import torch

    import cnn

    def layers(training):
        conv, bn = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        torch_seq = torch.nn.Sequential(conv, bn, torch.nn.ReLU())
        ours = cnn.ConvBNReLU2d(conv, bn)
        for m in (torch_seq, ours):
            m.train(training)
        return torch_seq, ours

    x = torch.randn(2, 4, 6, 6)
    counts = {}
    for mode, training in (("train", True), ("eval", False)):
        torch_seq, ours = layers(training)
        counts[f"torch_{mode}"] = count_torch_ops(torch_seq, x)
        counts[f"ours_{mode}"] = count_our_launches(ours, x)
    rows = []
    for shape in conv_shapes:
        nbytes = activation_bytes(shape, element_bytes)
        row = {"shape": shape.name}
        for mode in ("train", "eval"):
            row[f"{mode}_launches_torch"] = len(counts[f"torch_{mode}"])
            row[f"{mode}_launches_ours"] = len(counts[f"ours_{mode}"])
            row[f"{mode}_MB_torch"] = round(nbytes[f"torch_{mode}"] / 1e6, 2)
            row[f"{mode}_MB_ours"] = round(nbytes[f"ours_{mode}"] / 1e6, 2)
        rows.append(row)
    return rows, counts


COLUMNS = ("shape", "train_launches_torch", "train_launches_ours", "train_MB_torch",
           "train_MB_ours", "eval_launches_torch", "eval_launches_ours", "eval_MB_torch",
           "eval_MB_ours")

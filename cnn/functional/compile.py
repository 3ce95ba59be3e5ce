"""How the ops meet ``torch.compile``.

Each op is already one or a few Triton launches behind an autograd.Function; Dynamo cannot trace
those launchers (autotuning, and under the interpreter the interpreter itself). So ``torch.compile``
runs every op of ours as it is, with its own forward and backward kernels, and compiles the code
around it: one graph break per op. ``fullgraph=True`` therefore raises, as for any disabled
function.
"""
import torch


def run_as_is_under_compile(op):
    """``op`` unchanged in eager mode; under ``torch.compile``, called as it is (not traced)."""
    return torch.compiler.disable(op, recursive=True)  # keeps op's name, doc and signature

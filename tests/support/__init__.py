"""Shared test helpers: where things are, which device runs the kernels, per-dtype tolerances
and comparison against torch's reference, and the one launch counter (``launches``).

References are torch's own ops evaluated in float64 on the same input values, so the only
error left is ours; tolerances are then the rounding of the output dtype (fp32 accumulation
everywhere), or TF32's when a GPU uses it for fp32 as cuDNN does.
"""
import os
from pathlib import Path

import torch
from cnn.kernels.runtime import INTERPRET

from cnn import kernels

from .tripwire import launches  # noqa: F401  (the one launch counter)

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent

def compiled_env() -> dict:
    """The environment of a compiled-mode subprocess (TRITON_INTERPRET=0: kernels are
    JITFunctions, compiled for a GPU target without one) at the repo root, every conv config
    enabled whatever the caller tunes."""
    env = dict(os.environ, TRITON_INTERPRET="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("CNN_AUTOTUNE", None)
    return env


# Compiled on a CUDA machine (bigger shapes, fp16/bf16 cases), Triton's interpreter elsewhere.
GPU = torch.cuda.is_available() and not kernels.runtime.INTERPRET
DEVICE = torch.device("cuda" if GPU else "cpu")

# (rtol, atol as a fraction of the reference's largest magnitude)
_TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
_TF32 = (5e-3, 5e-3)


def tolerance(dtype: torch.dtype):
    if dtype == torch.float32 and not INTERPRET and torch.backends.cudnn.allow_tf32:
        return _TF32
    return _TOLERANCES[dtype]


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype=None, what=""):
    """actual (any float dtype) against a float64 reference, at ``dtype``'s tolerance."""
    dtype = dtype or actual.dtype
    rtol, atol_frac = tolerance(dtype)
    expected = expected.double()
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol,
                               atol=atol_frac * max(scale, 1.0), msg=lambda m: f"{what}: {m}")

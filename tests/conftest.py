"""Test setup: without CUDA, run the kernels through Triton's interpreter.

TRITON_INTERPRET must be set before triton is imported; the same tests run compiled on a
CUDA machine, where ``GPU`` is true and they add bigger shapes and fp16/bf16 cases.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from cnn import kernels  # noqa: E402, F401

# Tests live in folders that mirror the tree; what they share is the package tests/support.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import DEVICE, launches  # noqa: E402

try:
    from hypothesis import settings
except ImportError:  # the property tests then fail to collect; the rest still run
    pass
else:
    # CI must not depend on the draw: the property tests replay the same examples on every run.
    # HYPOTHESIS_PROFILE=explore draws new ones.
    settings.register_profile("ci", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture
def launched():
    """The names of the Triton kernels launched during the test, in order (``launches``);
    clear() it to count from a later point."""
    with launches() as names:
        yield names

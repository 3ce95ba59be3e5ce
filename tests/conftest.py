"""Test setup: without CUDA, run the kernels through Triton's interpreter.

TRITON_INTERPRET must be set before triton is imported; the same tests run compiled on a
CUDA machine, where ``GPU`` is true and they add bigger shapes and fp16/bf16 cases.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import kernels  # noqa: E402, F401

GPU = torch.cuda.is_available() and not kernels.runtime.INTERPRET
DEVICE = torch.device("cuda" if GPU else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def device():
    return DEVICE

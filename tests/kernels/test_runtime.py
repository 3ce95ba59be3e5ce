"""cnn.kernels.runtime's reading of its environment: cuDNN's TF32 setting through both of torch's
APIs, and the refusal of a Triton interpreter that cannot run with the installed numpy."""
import os
import subprocess
import sys

import cnn.kernels.runtime as runtime
import pytest
import torch
from support import REPO

HAS_PRECISION_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


@pytest.fixture
def restore_precision():
    saved = torch.backends.cudnn.allow_tf32
    levels = [(torch.backends.cudnn.conv, torch.backends.cudnn.conv.fp32_precision),
              (torch.backends.cudnn.rnn, torch.backends.cudnn.rnn.fp32_precision),
              (torch.backends.cudnn, torch.backends.cudnn.fp32_precision),
              (torch.backends, torch.backends.fp32_precision)] if HAS_PRECISION_API else []
    yield
    torch.backends.cudnn.allow_tf32 = saved
    for level, value in levels:
        level.fp32_precision = value


@pytest.mark.skipif(not HAS_PRECISION_API, reason="torch before the fp32_precision API")
@pytest.mark.parametrize("conv,cudnn,generic,tf32", [
    ("ieee", "none", "none", False), ("tf32", "none", "none", True),
    ("none", "tf32", "none", True), ("none", "ieee", "tf32", False),
    ("none", "none", "tf32", True), ("none", "none", "none", False),
])
def test_new_precision_api_is_read_as_torch_resolves_it(conv, cudnn, generic, tf32,
                                                        restore_precision):
    torch.backends.fp32_precision = generic
    torch.backends.cudnn.fp32_precision = cudnn
    torch.backends.cudnn.conv.fp32_precision = conv
    assert runtime.cudnn_conv_allows_tf32() is tf32
    # The fp32 path never raises, whatever mix of settings (the legacy flag may).
    assert runtime.dot_precision(torch.float32) == ("tf32" if tf32 and not runtime.INTERPRET
                                                    else "ieee")


@pytest.mark.parametrize("allow", [True, False])
def test_legacy_flag_is_read(allow, restore_precision):
    torch.backends.cudnn.allow_tf32 = allow
    assert runtime.cudnn_conv_allows_tf32() is allow


@pytest.mark.skipif(not HAS_PRECISION_API, reason="torch before the fp32_precision API")
def test_fp32_conv_runs_with_conv_precision_ieee(restore_precision):
    import cnn
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # now cudnn.allow_tf32 itself raises
    x, w = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y = cnn.functional.conv2d(x.to(device), w.to(device))
    # IEEE fp32 (not TF32): fp32 rounding of a float64 reference.
    torch.testing.assert_close(y.cpu().double(),
                               torch.nn.functional.conv2d(x.double(), w.double()),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("triton_version,numpy_version,refused", [
    ("3.6.0", "2.4.0", True), ("3.4.0", "2.4.6", True), ("3.5.1", "2.5.0", True),
    ("3.6.0", "2.3.5", False), ("3.7.0", "2.4.0", False), ("3.9.0", "2.4.6", False),
    ("3.6.0", "1.26.4", False), ("3.10.0+git1234", "2.4.0", False),
    ("3.6.0", "2.4.0rc1", True),
])
def test_interpreter_numpy_conflict(triton_version, numpy_version, refused):
    message = runtime.interpreter_numpy_conflict(triton_version, numpy_version)
    assert (message is not None) is refused
    if refused:
        assert "pip install 'numpy<2.4'" in message and triton_version in message


def test_conflict_is_refused_at_import_under_the_interpreter():
    """The real import path, with the installed versions replaced by a failing pair."""
    code = ("import numpy, triton; numpy.__version__ = '2.4.0'; triton.__version__ = '3.6.0'\n"
            "import kernels")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode != 0
    assert "RuntimeError: cnn: Triton 3.6.0's interpreter" in result.stderr
    assert "pip install 'numpy<2.4'" in result.stderr

"""cnn.Conv2d is a drop-in torch.nn.Conv2d: constructor, state_dict, repr, padding modes,
and a forward that runs our kernels (never torch's convolution)."""
import subprocess
import sys

import pytest
import torch
from support import assert_matches

import cnn


def twin_modules(**kwargs):
    torch.manual_seed(3)
    ours = cnn.Conv2d(**kwargs)
    ref = torch.nn.Conv2d(**kwargs).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_is_a_torch_conv_with_same_state_dict_and_repr():
    ours, ref = twin_modules(in_channels=3, out_channels=5, kernel_size=3, stride=2,
                             padding=1, groups=1, bias=False)
    assert isinstance(ours, torch.nn.Conv2d)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours) == repr(ref)
    ours.load_state_dict(torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False).state_dict())


def test_factory_kwargs():
    conv = cnn.Conv2d(2, 4, 3, dtype=torch.float64, device="cpu")
    assert conv.weight.dtype == torch.float64


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_torch(padding_mode):
    ours, ref = twin_modules(in_channels=2, out_channels=3, kernel_size=3, padding=(1, 2),
                             padding_mode=padding_mode)
    x = torch.randn(2, 2, 7, 8)
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    y = ours(x_ours)
    y_ref = ref(x_ref)
    y.sum().backward()
    y_ref.sum().backward()
    assert_matches(y, y_ref, torch.float32, "output")
    assert_matches(x_ours.grad, x_ref.grad, torch.float32, "grad_input")
    assert_matches(ours.weight.grad, ref.weight.grad, torch.float32, "grad_weight")


def test_forward_never_calls_torch_convolution(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch's convolution was called")
    monkeypatch.setattr(torch.nn.functional, "conv2d", forbidden)
    monkeypatch.setattr(torch, "conv2d", forbidden)
    monkeypatch.setattr(torch, "convolution", forbidden)
    conv = cnn.Conv2d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_import_without_cuda_warns_once_about_the_interpreter():
    code = ("import warnings, os\n"
            "os.environ.pop('TRITON_INTERPRET', None)\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import cnn, cnn.functional, kernels\n"
            "msgs = [str(w.message) for w in caught if 'interpreter' in str(w.message)]\n"
            "print(len(msgs), os.environ.get('TRITON_INTERPRET'))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    if torch.cuda.is_available():
        assert out == ["0", "None"]
    else:
        assert out == ["1", "1"]


def test_autocast_runs_in_the_autocast_dtype_like_torch():
    conv = cnn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    conv, x = conv.to(device_type), x.to(device_type)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        y = conv(x)
        y_ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert_matches(y, y_ref.double(), torch.bfloat16, "autocast output")

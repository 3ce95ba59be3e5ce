"""cnn.functional.relu and cnn.ReLU against torch.relu: values (NaN, -0.0), gradients, shapes
and strides, dtypes, in-place use under autograd, and torch's errors."""
import pytest
import torch
from support import DEVICE
from torch import nn

import cnn

SHAPES = {
    "scalar": (),
    "vector": (37,),
    "matrix": (5, 9),
    "nchw": (2, 3, 5, 7),
    "five_dims": (2, 3, 2, 3, 4),
    "empty": (0, 3, 4),
}


def make(shape, layout, dtype=torch.float32):
    if layout == "non_contiguous" and len(shape) >= 1:
        x = torch.randn(*shape[:-1], 2 * shape[-1], device=DEVICE)[..., ::2]
    elif layout == "channels_last" and len(shape) == 4:
        x = torch.randn(*shape, device=DEVICE).to(memory_format=torch.channels_last)
    elif layout == "transposed" and len(shape) >= 2:
        x = torch.randn(*shape, device=DEVICE).transpose(0, -1)
    else:
        x = torch.randn(shape, device=DEVICE)
    return x.to(dtype)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "non_contiguous",
                                    "transposed"])
def test_forward_backward(shape, layout):
    x = make(shape, layout).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = cnn.functional.relu(x), torch.relu(x_ref)
    assert y.shape == y_ref.shape
    assert torch.equal(y, y_ref)
    if x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4:
        assert y.stride() == x.stride()
    grad = make(shape, layout)  # same shape as x, and the same kind of strides
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int32,
                                   torch.int64, torch.uint8], ids=str)
def test_dtypes(dtype):
    x = (torch.randn(4, 5, 6, device=DEVICE) * 10).to(dtype)
    assert torch.equal(cnn.functional.relu(x), torch.relu(x))


def test_nan_and_signed_zero_pass_through():
    x = torch.tensor([float("nan"), -0.0, 0.0, -1.0, 2.0, float("-inf"), float("inf")],
                     device=DEVICE)
    y, y_ref = cnn.functional.relu(x), torch.relu(x)
    assert torch.equal(y.isnan(), y_ref.isnan())
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    assert torch.equal(y.signbit(), y_ref.signbit())


@pytest.mark.parametrize("layout", ["contiguous", "non_contiguous"])
def test_inplace_functional_and_module(layout):
    src = make((3, 4, 5), layout)
    w = torch.randn(3, 4, 5, device=DEVICE, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_()
    # an in-place relu on a non-leaf, then backward through it
    h = src * w
    out = cnn.ReLU(inplace=True)(h)
    assert out is h
    h_ref = src * w_ref
    torch.relu_(h_ref)
    assert torch.equal(out, h_ref)
    out.sum().backward()
    h_ref.sum().backward()
    assert torch.equal(w.grad, w_ref.grad)
    # the functional form modifies its (possibly strided) argument
    b = src.clone() if layout == "contiguous" else make((3, 4, 5), layout)
    expected = torch.relu(b)
    r = cnn.functional.relu(b, inplace=True)
    assert r is b and torch.equal(b, expected)


def test_inplace_on_leaf_requiring_grad_is_refused_like_torch():
    x = torch.randn(4, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        torch.relu_(x)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        cnn.functional.relu(x, inplace=True)


def test_module_is_torchs():
    ours = cnn.ReLU(inplace=True)
    assert isinstance(ours, nn.ReLU) and repr(ours) == repr(nn.ReLU(inplace=True))


def test_gradcheck():
    x = torch.randn(3, 4, dtype=torch.float64, device=DEVICE)
    x = (x + 0.1 * x.sign()).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(cnn.functional.relu, (x,))


@pytest.mark.parametrize("dtype,error", [(torch.bool, RuntimeError),
                                         (torch.complex64, NotImplementedError)])
def test_errors_match_torch(dtype, error):
    x = torch.ones(3, device=DEVICE, dtype=dtype)
    with pytest.raises(error) as theirs:
        torch.relu(x)
    with pytest.raises(error) as ours:
        cnn.functional.relu(x)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("value", [[1.0, -2.0], 1.0, None])
def test_non_tensor_input_raises_torchs_type_error(value):
    for op in (cnn.functional.relu, cnn.ReLU()):
        with pytest.raises(TypeError) as theirs:
            (torch.relu if op is cnn.functional.relu else nn.ReLU())(value)
        with pytest.raises(TypeError) as ours:
            op(value)
        assert str(ours.value) == str(theirs.value)

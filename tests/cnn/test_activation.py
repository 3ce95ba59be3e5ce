"""cnn's relu6, leaky_relu, silu, hardswish and gelu (both approximations) against torch's:
values (NaN, -0.0), gradients (fp32, and fp64 gradcheck/gradgradcheck), layouts, in-place use,
torch's errors before any launch, the modules, cnn.convert and routing under cnn.enabled().

Tiny tensors: each interpreted launch costs ~20 ms whatever its size."""
import cnn.kernels.activation as activation_kernels
import pytest
import torch
import torch.nn.functional as TF
from support import DEVICE, assert_matches, launches
from torch import nn

import cnn
import cnn.functional as F

# name -> (ours, torch's): the same call signature
ACTIVATIONS = {
    "relu6": (F.relu6, TF.relu6),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "silu": (F.silu, TF.silu),
    "hardswish": (F.hardswish, TF.hardswish),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh")),
}
KERNEL = "activation_kernel"


def make(shape, layout="contiguous", dtype=torch.float32, scale=4.0):
    """Values over every piece of the activations (kinks at -3, 0, 3, 6)."""
    if layout == "non_contiguous":
        x = torch.randn(*shape[:-1], 2 * shape[-1], device=DEVICE, dtype=dtype)[..., ::2]
    elif layout == "channels_last":
        x = torch.randn(shape, device=DEVICE, dtype=dtype).to(memory_format=torch.channels_last)
    else:
        x = torch.randn(shape, device=DEVICE, dtype=dtype)
    return x * scale if layout != "non_contiguous" else x.mul_(scale)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_forward_backward_match_torch(name):
    """fp32 in three layouts and fp64: output (and its layout) and input gradient against
    torch's in float64 on the same values."""
    ours, theirs = ACTIVATIONS[name]
    cases = [("contiguous", torch.float32), ("channels_last", torch.float32),
             ("non_contiguous", torch.float32), ("contiguous", torch.float64)]
    for layout, dtype in cases:
        x = make((2, 3, 4, 5), layout, dtype).requires_grad_()
        x_ref = x.detach().double().requires_grad_()
        y, y_ref = ours(x), theirs(x_ref)
        assert y.dtype == dtype
        assert_matches(y, y_ref, what=f"{name} {layout} {dtype} output")
        if layout == "channels_last":
            assert y.stride() == x.stride()
        grad = make((2, 3, 4, 5), layout, dtype, scale=1.0)
        y.backward(grad)
        y_ref.backward(grad.double())
        assert_matches(x.grad, x_ref.grad, what=f"{name} {layout} {dtype} gradient")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradcheck_and_gradgradcheck(name):
    """First and second derivatives in float64 (away from the kinks, where none exists)."""
    ours, _ = ACTIVATIONS[name]
    x = torch.tensor([[-5.0, -2.9, -0.7], [0.4, 2.5, 7.0]], dtype=torch.float64, device=DEVICE)
    x.requires_grad_()
    assert torch.autograd.gradcheck(ours, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(ours, (x,), fast_mode=True)


def test_second_derivative_matches_torch():
    """d/dx of (dy * a'(x)) against torch's own double backward, fp64, every activation."""
    x = make((2, 7), dtype=torch.float64).requires_grad_()
    dy, ggx = make((2, 7), dtype=torch.float64), make((2, 7), dtype=torch.float64)
    for name, (ours, theirs) in ACTIVATIONS.items():
        results = []
        for fn in (ours, theirs):
            (gx,) = torch.autograd.grad(fn(x), x, dy, create_graph=True)
            results.append(torch.autograd.grad(gx, x, ggx, allow_unused=True)[0])
        theirs_gg = results[1] if results[1] is not None else torch.zeros_like(x)
        torch.testing.assert_close(results[0], theirs_gg, msg=name)


def test_nan_inf_and_signed_zero_forward():
    # Reference in fp64: torch's vectorised fp32 CPU gelu gives NaN at +inf (its scalar loop,
    # fp64 and CUDA give inf).
    x = torch.tensor([float("nan"), -0.0, 0.0, -1.0, 2.0, 7.0, -4.0, -1e30, 1e30,
                      float("-inf"), float("inf")], device=DEVICE)
    for name, (ours, theirs) in ACTIVATIONS.items():
        y, y_ref = ours(x).double(), theirs(x.double())
        assert torch.equal(y.isnan(), y_ref.isnan()), name
        torch.testing.assert_close(y.nan_to_num(), y_ref.nan_to_num(), msg=name)
        assert torch.equal(y.signbit() | y.isnan(), y_ref.signbit() | y_ref.isnan()), name


def test_several_programs_with_a_partial_last_block(monkeypatch):
    """The GPU walks a tensor in many blocks (the interpreter in one): blocks of 64 over 120
    elements, flat and strided."""
    monkeypatch.setattr(activation_kernels, "block_for", lambda numel: 64)
    for layout in ("contiguous", "non_contiguous"):
        x = make((2, 3, 4, 5), layout).requires_grad_()
        x_ref = x.detach().double().requires_grad_()
        y, y_ref = F.silu(x), TF.silu(x_ref)
        assert_matches(y, y_ref, what=layout)
        y.backward(torch.ones_like(y))
        y_ref.backward(torch.ones_like(y_ref))
        assert_matches(x.grad, x_ref.grad, what=layout)


def test_empty_tensor_launches_nothing():
    x = torch.empty(0, 3, device=DEVICE, requires_grad=True)
    with launches() as launched:
        y = F.silu(x)
        y.sum().backward()
    assert launched == [] and y.shape == (0, 3) and x.grad.shape == (0, 3)


def test_five_dims_non_contiguous():
    x = make((2, 2, 2, 3, 4), "non_contiguous").requires_grad_()
    y = F.hardswish(x)
    assert_matches(y, TF.hardswish(x.detach().double()))
    y.backward(torch.ones_like(y))
    x_ref = x.detach().double().requires_grad_()
    TF.hardswish(x_ref).sum().backward()
    assert_matches(x.grad, x_ref.grad)


def test_relu6_integer_dtypes():
    for dtype in (torch.int32, torch.uint8):
        x = (torch.randn(5, 6, device=DEVICE) * 10).to(dtype)
        assert torch.equal(F.relu6(x), TF.relu6(x))


INPLACE = {
    "relu6": (lambda x: F.relu6(x, inplace=True), lambda x: TF.relu6(x, inplace=True)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.3, inplace=True),
                   lambda x: TF.leaky_relu(x, 0.3, inplace=True)),
    "silu": (lambda x: F.silu(x, inplace=True), lambda x: TF.silu(x, inplace=True)),
    "hardswish": (lambda x: F.hardswish(x, inplace=True),
                  lambda x: TF.hardswish(x, inplace=True)),
}


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_on_non_leaf_then_backward(name):
    ours, theirs = INPLACE[name]
    src = make((3, 4), "non_contiguous" if name == "silu" else "contiguous")
    w = torch.randn(3, 4, device=DEVICE, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_()
    h, h_ref = src * w, src * w_ref
    out = ours(h)
    assert out is h
    theirs(h_ref)
    assert_matches(out, h_ref.double())
    out.backward(src)
    h_ref.backward(src)
    assert_matches(w.grad, w_ref.grad.double())
    plain = src.clone()
    assert ours(plain) is plain
    assert_matches(plain, theirs(src.double()))


def test_inplace_under_torch_func_grad():
    """Traced in-place forms (torch.func, torch.compile) compute, then copy back: the op's saved
    input must survive that write."""
    def loss(fn, x):
        h = x * 2
        fn(h, inplace=True)
        return (h * h).sum()
    x = make((3, 4))
    ours = torch.func.grad(lambda x: loss(F.hardswish, x))(x)
    assert_matches(ours, torch.func.grad(lambda x: loss(TF.hardswish, x))(x.double()))


def test_inplace_errors_like_torch():
    x = torch.randn(4, device=DEVICE, requires_grad=True)
    for ours, theirs in INPLACE.values():
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            theirs(x)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            ours(x)
    # a negative slope: torch refuses the backward of the in-place form (y no longer tells x)
    for fn in (TF.leaky_relu, F.leaky_relu):
        h = x * 1
        fn(h, -0.5, inplace=True)
        with pytest.raises(RuntimeError, match="In-place leakyReLu backward"):
            h.sum().backward()


def test_errors_match_torch_and_launch_nothing():
    x = torch.ones(3, device=DEVICE)
    calls = [
        (lambda m: m.silu(x.int())), (lambda m: m.relu6(x.bool())),
        (lambda m: m.leaky_relu(x.to(torch.complex64))), (lambda m: m.gelu(x.long())),
        (lambda m: m.hardswish(x.bool())), (lambda m: m.gelu(x, approximate="sigmoid")),
        (lambda m: m.gelu(x, approximate=None)), (lambda m: m.leaky_relu(x, "0.1")),
        (lambda m: m.relu6([1.0])), (lambda m: m.silu(None)),
    ]
    for call in calls:
        with pytest.raises(Exception) as theirs:
            call(TF)
        with launches() as launched, pytest.raises(type(theirs.value)) as ours:
            call(F)
        assert launched == []
        assert str(ours.value) == str(theirs.value)


def test_modules_are_torchs_with_state():
    pairs = [(cnn.ReLU6(inplace=True), nn.ReLU6(inplace=True)),
             (cnn.LeakyReLU(0.3, inplace=True), nn.LeakyReLU(0.3, inplace=True)),
             (cnn.SiLU(inplace=True), nn.SiLU(inplace=True)),
             (cnn.Hardswish(), nn.Hardswish()), (cnn.GELU(approximate="tanh"),
                                                  nn.GELU(approximate="tanh"))]
    x = make((2, 5))
    for ours, theirs in pairs:
        assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
        assert ours.state_dict() == theirs.state_dict()
        assert_matches(ours(x.clone()), theirs(x.double()))


def test_convert_maps_every_activation():
    model = nn.Sequential(nn.ReLU6(), nn.LeakyReLU(0.1), nn.SiLU(), nn.Hardswish(),
                          nn.GELU(approximate="tanh"), nn.GELU())
    ours, report = cnn.convert(model, report=True)
    assert [type(m) for m in ours] == [cnn.ReLU6, cnn.LeakyReLU, cnn.SiLU, cnn.Hardswish,
                                       cnn.GELU, cnn.GELU]
    assert not report.left and ours[1].negative_slope == 0.1 and ours[4].approximate == "tanh"
    x = make((2, 6))
    with launches() as launched:
        y = ours(x)
    assert launched == [KERNEL] * 6
    assert_matches(y, model.double()(x.double()))


def test_routing_lands_on_our_kernel():
    x = make((2, 5))
    with cnn.enabled() as report, launches() as launched:
        y = TF.silu(x)
        z = nn.ReLU6()(x)                     # F.hardtanh(x, 0, 6)
        TF.leaky_relu_(x.clone(), 0.1)
        TF.gelu(x, approximate="tanh")
        TF.hardtanh(x, -1.0, 1.0)             # not ours: torch's, counted with a reason
    assert launched == [KERNEL] * 4
    assert torch.equal(y, F.silu(x)) and torch.equal(z, TF.relu6(x))
    assert [report.routed(op) for op in ("silu", "hardtanh", "leaky_relu", "gelu")] == [1] * 4
    (reason,) = report.fallbacks("hardtanh")
    assert "relu6" in reason

"""cnn.functional.batch_norm and cnn.BatchNorm2d against torch's batch norm (float64 on the
same values): training steps (output, every gradient, running stats, num_batches_tracked),
evaluation, affine or not, untracked stats, momentum None, layouts, dtypes, input ranks,
numerical stability, determinism, gradcheck and torch's errors."""
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DEVICE, GPU, assert_matches
from support.tripwire import launches
from torch import nn

import cnn

LAYOUTS = ["nchw", "channels_last", "non_contiguous"]


def make_input(shape, layout="nchw", dtype=torch.float32, offset=0.0):
    if layout == "non_contiguous":
        x = torch.randn(*shape[:-1], 2 * shape[-1], device=DEVICE, dtype=dtype)[..., ::2]
    else:
        x = torch.randn(*shape, device=DEVICE, dtype=dtype)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    return x + offset if offset else x


def module_pair(channels, dtype=torch.float32, **options):
    """(ours, torch's float64 reference) with the same random affine parameters."""
    ours = cnn.BatchNorm2d(channels, device=DEVICE, dtype=dtype, **options)
    if ours.affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.uniform_(-0.5, 0.5)
    ref = nn.BatchNorm2d(channels, device=DEVICE, dtype=torch.float64, **options)
    ref.load_state_dict({k: v.double() if v.is_floating_point() else v
                         for k, v in ours.state_dict().items()})
    return ours, ref


def step(ours, ref, x, dtype, what):
    """One forward + backward of both modules on x; compares output, grads, buffers."""
    xa = x.detach().clone().requires_grad_()
    xr = x.detach().double().requires_grad_()
    y, y_ref = ours(xa), ref(xr)
    assert y.dtype == x.dtype and y.shape == x.shape
    grad = torch.randn(y_ref.shape, device=DEVICE, dtype=torch.float64)
    y.backward(grad.to(dtype))
    y_ref.backward(grad)
    assert_matches(y, y_ref, dtype, f"{what} output")
    assert_matches(xa.grad, xr.grad, dtype, f"{what} grad_input")
    if ours.affine:
        assert_matches(ours.weight.grad, ref.weight.grad, dtype, f"{what} grad_weight")
        assert_matches(ours.bias.grad, ref.bias.grad, dtype, f"{what} grad_bias")
    for (name, b), (_, b_ref) in zip(ours.named_buffers(), ref.named_buffers(), strict=True):
        if name == "num_batches_tracked":
            assert b.item() == b_ref.item(), what
        else:
            assert_matches(b, b_ref, dtype, f"{what} {name}")
    return y


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options", [
    {}, {"affine": False}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3},
    {"track_running_stats": False},
], ids=["default", "no_affine", "momentum_none", "momentum_eps", "untracked"])
def test_module_training_then_eval(layout, options):
    ours, ref = module_pair(5, **options)
    for i in range(2):
        y = step(ours, ref, make_input((3, 5, 6, 7), layout), torch.float32, f"train{i}")
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last)
    ours.eval()
    ref.eval()
    step(ours, ref, make_input((2, 5, 4, 3), layout), torch.float32, "eval")


def test_cumulative_momentum_counts_batches():
    ours, ref = module_pair(3, momentum=None)
    for i in range(3):
        step(ours, ref, make_input((4, 3, 3, 5)), torch.float32, f"step{i}")
    assert ours.num_batches_tracked.item() == 3


def test_numerically_stable_statistics():
    """A large mean: E[x^2] - E[x]^2 in fp32 would lose ~3 digits of the variance here."""
    ours, ref = module_pair(4)
    step(ours, ref, make_input((8, 4, 16, 16), offset=100.0), torch.float32, "offset100")


@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 7), (2, 5, 3, 2, 2)],
                         ids=["2d", "3d", "5d"])
@pytest.mark.parametrize("training", [True, False])
def test_functional_other_ranks(shape, training):
    x = make_input(shape)
    rm, rv = torch.randn(5, device=DEVICE), torch.rand(5, device=DEVICE) + 0.5
    w, b = torch.randn(5, device=DEVICE), torch.randn(5, device=DEVICE)
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    refs = [t.double().requires_grad_() for t in (x, w, b)]
    rm_a, rv_a, rm_r, rv_r = rm.clone(), rv.clone(), rm.double(), rv.double()
    y = cnn.functional.batch_norm(ours[0], rm_a, rv_a, ours[1], ours[2], training, 0.2, 1e-4)
    y_ref = F.batch_norm(refs[0], rm_r, rv_r, refs[1], refs[2], training, 0.2, 1e-4)
    assert y.shape == x.shape
    grad = torch.randn(y_ref.shape, device=DEVICE, dtype=torch.float64)
    y.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(y, y_ref, what="output")
    for a, r, name in zip(ours, refs, ("input", "weight", "bias"), strict=True):
        assert_matches(a.grad, r.grad, what=f"grad_{name}")
    assert_matches(rm_a, rm_r, what="running_mean")
    assert_matches(rv_a, rv_r, what="running_var")


@pytest.mark.parametrize("which", ["weight_only", "bias_only", "no_running_stats"])
def test_functional_optional_arguments(which):
    x = make_input((3, 4, 5, 5))
    w = torch.randn(4, device=DEVICE) if which == "weight_only" else None
    b = torch.randn(4, device=DEVICE) if which == "bias_only" else None
    rm = None if which == "no_running_stats" else torch.zeros(4, device=DEVICE)
    rv = None if which == "no_running_stats" else torch.ones(4, device=DEVICE)
    args = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    refs = [t.double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = cnn.functional.batch_norm(args[0], rm, rv, args[1], args[2], training=True)
    y_ref = F.batch_norm(refs[0], None if rm is None else rm.double(),
                         None if rv is None else rv.double(), refs[1], refs[2], training=True)
    y.sum().backward()
    (y_ref * 1.0).sum().backward()
    assert_matches(y, y_ref, what="output")
    for a, r in zip(args, refs, strict=True):
        if a is not None:
            assert_matches(a.grad, r.grad, what="grad")


def test_needs_input_grad_respected():
    """Frozen affine parameters and an input without grad: only what is asked is computed."""
    ours, ref = module_pair(3)
    ours.weight.requires_grad_(False)
    ref.weight.requires_grad_(False)
    x = make_input((2, 3, 4, 4))
    y, y_ref = ours(x), ref(x.double())
    y.sum().backward()
    y_ref.sum().backward()
    assert ours.weight.grad is None
    assert_matches(ours.bias.grad, ref.bias.grad, what="grad_bias")


DTYPES = [torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dtypes(dtype, layout):
    ours, ref = module_pair(4, dtype=dtype)
    step(ours, ref, make_input((2, 4, 5, 6), layout, dtype), dtype, "train")
    ours.eval()
    ref.eval()
    step(ours, ref, make_input((2, 4, 5, 6), layout, dtype), dtype, "eval")


def test_half_input_float_parameters():
    """torch's mixed precision: fp16 input, fp32 parameters and running stats."""
    x = make_input((2, 3, 4, 4), dtype=torch.float16)
    rm, rv = torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)
    w, b = torch.rand(3, device=DEVICE) + 0.5, torch.randn(3, device=DEVICE)
    y = cnn.functional.batch_norm(x, rm, rv, w, b, training=True)
    rm_r, rv_r = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y_ref = F.batch_norm(x.double(), rm_r, rv_r, w.double(), b.double(), training=True)
    assert y.dtype == torch.float16
    assert_matches(y, y_ref, torch.float16, "output")
    assert_matches(rm, rm_r, torch.float16, "running_mean")
    assert_matches(rv, rv_r, torch.float16, "running_var")


def test_backward_is_deterministic():
    x = make_input((4, 6, 9, 9)).requires_grad_()
    w = torch.rand(6, device=DEVICE, requires_grad=True)
    grad = torch.randn(4, 6, 9, 9, device=DEVICE)
    results = []
    for _ in range(2):
        x.grad = w.grad = None
        cnn.functional.batch_norm(x, None, None, w, None, training=True).backward(grad)
        results.append((x.grad.clone(), w.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_empty_batch():
    ours, ref = module_pair(3)
    x = torch.randn(0, 3, 4, 4, device=DEVICE)
    y, y_ref = ours(x), ref(x.double())
    assert y.shape == y_ref.shape == x.shape
    assert torch.equal(ours.running_mean.double(), ref.running_mean)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 1


def _state(momentum_none: bool):
    """(running_mean, running_var, num_batches_tracked) after some batches (fixed values)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, generator=g).to(DEVICE), (torch.rand(3, generator=g) + 0.5).to(DEVICE),
            torch.tensor(4 if momentum_none else 0, device=DEVICE)]


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_eager_training_step_is_the_op_pair_bit_for_bit(momentum):
    """Eager training runs one fused implementation (the running stats updated inside the
    three launches); traced code runs torch.ops.cnn.batch_norm_train, then
    batch_norm_update_stats (one more launch). Same outputs, gradients and state, bit for bit."""
    step = cnn.ops.batch_norm.batch_norm_train_and_update
    x = make_input((3, 3, 2, 5), "channels_last")
    results = []
    for run, expected in ((step, ["batch_norm_stats_kernel", "batch_norm_finalize_kernel",
                                  "batch_norm_normalize_kernel"]),
                          (step.call_pair, ["batch_norm_stats_kernel",
                                            "batch_norm_finalize_kernel",
                                            "batch_norm_normalize_kernel",
                                            "batch_norm_update_stats_kernel"])):
        xa = x.detach().clone().requires_grad_()
        w = torch.linspace(0.5, 1.5, 3, device=DEVICE).requires_grad_()
        state = _state(momentum is None)
        with launches() as launched:
            outputs = run(xa, w, None, 1e-5, *state, momentum)
        assert launched == expected
        outputs[0].backward(torch.linspace(-1, 1, x.numel(), device=DEVICE).view_as(x))
        results.append([*outputs, xa.grad, w.grad, *state])
    for ours, pair in zip(*results, strict=True):
        assert torch.equal(ours, pair)


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum", "cumulative"])
def test_library_ops_differentiate_and_update_as_torch(momentum):
    """torch.ops.cnn.batch_norm_train differentiated below any Function (its registered
    autograd), then batch_norm_update_stats: torch's output, gradients and running stats."""
    x = make_input((4, 3, 2, 3))
    w = torch.rand(3, device=DEVICE) + 0.5
    b = torch.randn(3, device=DEVICE)
    ours, theirs = [t.clone().requires_grad_() for t in (x, w, b)], \
        [t.double().requires_grad_() for t in (x, w, b)]
    state, ref_state = _state(momentum is None), [t.clone() for t in _state(momentum is None)]
    y, mean, _, var = torch.ops.cnn.batch_norm_train(*ours, 1e-5)
    torch.ops.cnn.batch_norm_update_stats(*state, mean, var, x.numel() // 3, momentum)
    ref = nn.BatchNorm2d(3, momentum=momentum, device=DEVICE, dtype=torch.float64)
    with torch.no_grad():
        for buffer, value in zip(ref.buffers(), ref_state, strict=True):
            buffer.copy_(value)
    y_ref = F.batch_norm(theirs[0], ref.running_mean, ref.running_var, *theirs[1:], True,
                         ref.momentum if momentum is not None else 1 / (ref_state[2].item() + 1))
    grad = torch.randn_like(y_ref)
    y.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(y, y_ref, what="output")
    for name, a, e in zip(("input", "weight", "bias"), ours, theirs, strict=True):
        assert_matches(a.grad, e.grad, torch.float32, f"grad_{name}")
    assert_matches(state[0], ref.running_mean, torch.float32, "running_mean")
    assert_matches(state[1], ref.running_var, torch.float32, "running_var")
    assert state[2].item() == ref_state[2].item() + 1


def test_state_dict_and_repr_are_torchs():
    ours = cnn.BatchNorm2d(7, momentum=None, affine=False)
    theirs = nn.BatchNorm2d(7, momentum=None, affine=False)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    assert isinstance(ours, nn.BatchNorm2d)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(training):
    # Tiny: the interpreter pays per launch, and gradcheck launches twice per input element.
    x = torch.randn(3, 2, 1, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    rm = torch.randn(2, dtype=torch.float64, device=DEVICE)
    rv = torch.rand(2, dtype=torch.float64, device=DEVICE) + 0.5
    fn = lambda x, w, b: cnn.functional.batch_norm(
        x, None if training else rm, None if training else rv, w, b, training=training)
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7)


@settings(max_examples=8 if not GPU else 30, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6),
       layout=st.sampled_from(LAYOUTS), momentum=st.sampled_from([0.1, None]))
def test_random_shapes(n, c, h, w, layout, momentum):
    if n * h * w == 1:
        return  # training needs more than one value per channel
    torch.manual_seed(n * 1000 + c * 100 + h * 10 + w)
    ours, ref = module_pair(c, momentum=momentum)
    step(ours, ref, make_input((n, c, h, w), layout), torch.float32, "train")


def _torch_error(fn_ours, fn_torch):
    with pytest.raises(Exception) as theirs:
        fn_torch()
    with pytest.raises(theirs.type) as ours:
        fn_ours()
    return str(ours.value), str(theirs.value)


@pytest.mark.parametrize("case", [
    "one_value_per_channel", "running_mean_size", "running_var_size", "weight_size",
    "bias_size", "eval_without_running_mean", "integer_input", "param_dtype",
    "only_running_mean", "module_3d",
])
def test_errors_match_torch(case):
    x = torch.randn(2, 3, 4, 4, device=DEVICE)
    rm, rv = torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)
    args = {
        "one_value_per_channel": ((torch.randn(1, 3, 1, 1), None, None), {"training": True}),
        "running_mean_size": ((x, torch.zeros(4), rv), {}),
        "running_var_size": ((x, rm, torch.ones(5)), {}),
        "weight_size": ((x, rm, rv, torch.ones(2)), {}),
        "bias_size": ((x, rm, rv, None, torch.ones(2)), {}),
        "eval_without_running_mean": ((x, None, None), {}),
        "integer_input": ((x.long(), None, None), {"training": True}),
        "param_dtype": ((x.half(), rm.half(), rv), {}),
        "only_running_mean": ((x, rm, None), {"training": True}),
    }
    if case == "module_3d":
        ours, theirs = _torch_error(lambda: cnn.BatchNorm2d(3)(torch.randn(2, 3, 4)),
                                    lambda: nn.BatchNorm2d(3)(torch.randn(2, 3, 4)))
    else:
        a, kw = args[case]
        a = tuple(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in a)
        ours, theirs = _torch_error(lambda: cnn.functional.batch_norm(*a, **kw),
                                    lambda: F.batch_norm(*a, **kw))
    if case != "param_dtype" or not GPU:  # torch's CUDA words this one differently
        assert ours == theirs


def test_refused_batch_leaves_state_as_torch_does():
    """One value per channel: refused before any launch; torch's module has counted the
    batch already, running stats untouched."""
    ours, ref = module_pair(3)
    before = copy.deepcopy(ours.running_mean)
    x = torch.randn(1, 3, 1, 1, device=DEVICE)
    for module, inp in ((ours, x), (ref, x.double())):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            module(inp)
    assert torch.equal(ours.running_mean, before)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()


@pytest.mark.parametrize("eps", [-1.0, 0.0, -0.0])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("form", ["functional", "module"])
def test_eps_checked_as_torch_does(eps, training, form):
    """eps <= 0 in training and eps < 0 in evaluation raise torch's ValueError before any
    launch (the module has counted the batch, as torch's); eps = 0 in evaluation runs."""
    x = torch.randn(4, 3, 3, 3, device=DEVICE)
    if form == "module":
        ours, ref = module_pair(3, eps=eps)
        ours.train(training), ref.train(training)
        run_ours, run_ref = (lambda: ours(x)), (lambda: ref(x.double()))
    else:
        stats = lambda dtype: (torch.zeros(3, device=DEVICE, dtype=dtype),
                               torch.ones(3, device=DEVICE, dtype=dtype))
        run_ours = lambda: cnn.functional.batch_norm(x, *stats(x.dtype), training=training,
                                                     eps=eps)
        run_ref = lambda: F.batch_norm(x.double(), *stats(torch.float64), training=training,
                                       eps=eps)
    try:
        expected = run_ref()
    except ValueError as theirs:
        with launches() as launched, pytest.raises(ValueError) as error:
            run_ours()
        assert str(error.value) == str(theirs) and launched == []
    else:
        assert_matches(run_ours(), expected, what="eps=0 in evaluation")
    if form == "module":
        assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()


# Inputs whose layout torch resolves its own way: size-1 dims where channels_last and NCHW
# strides can both hold (permuted (1, 3, 1, 3) is channels_last-contiguous although
# suggest_memory_format says contiguous), a channels_last_3d 5D input, and plain ones.
_LAYOUT_CASES = {
    "permuted_1c1w": ((3, 1, 3, 1), (3, 2, 1, 0)),
    "permuted_1ch1": ((1, 2, 3, 1), (3, 2, 1, 0)),
    "permuted_n111": ((1, 1, 3, 2), (3, 2, 1, 0)),
    "permuted_5d": ((3, 1, 1, 2, 1), (4, 3, 2, 1, 0)),
    "permuted_5d_dhw": ((1, 1, 3, 2, 1), (4, 3, 2, 1, 0)),
    "channels_last_like": ((2, 3, 3, 2), (0, 3, 1, 2)),
    "transposed_hw": ((2, 3, 2, 3), (0, 1, 3, 2)),
    "nchw": ((2, 3, 2, 3), (0, 1, 2, 3)),
}


@pytest.mark.parametrize("case", _LAYOUT_CASES.values(), ids=_LAYOUT_CASES.keys())
def test_output_strides_are_torchs(case):
    """Output and grad_input strides exactly torch's (Normalization.cpp's rules: the input's
    own format where input and every parameter are dense, else its suggested format), with
    contiguous or strided weights, training and evaluation."""
    base_shape, order = case
    for training, weight_stride in ((False, 1), (True, 1), (False, 2), (True, 2)):
        base = torch.randn(base_shape, device=DEVICE, dtype=torch.float64)
        x = base.permute(*order).requires_grad_()
        c = x.shape[1]
        weight = torch.rand(c * weight_stride, device=DEVICE, dtype=torch.float64)
        weight = weight[::weight_stride].requires_grad_()
        results = []
        for fn in (cnn.functional.batch_norm, F.batch_norm):
            rm = torch.zeros(c, device=DEVICE, dtype=torch.float64)
            rv = torch.ones(c, device=DEVICE, dtype=torch.float64)
            y = fn(x, rm, rv, weight, None, training)
            (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
            results.append((y.stride(), dx.stride()))
        assert results[0] == results[1], (training, weight_stride, x.stride())

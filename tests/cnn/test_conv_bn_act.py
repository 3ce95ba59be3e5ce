"""cnn.ConvBNReLU2d against torch's unfused nn.Sequential(Conv2d, BatchNorm2d, ReLU), evaluated
in float64 on the same values: training steps (output, every gradient, running stats,
num_batches_tracked), then evaluation; conv bias or none, groups, stride, momentum None,
channels_last; launches per forward and no torch compute ops; state_dict both ways;
needs_input_grad; gradcheck; torch's errors. Then the other activations and the residual input
(conv_bn_act2d, conv_act2d, cnn.ConvBNAct2d) against torch's composite."""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, GPU, assert_matches, launches
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import cnn
from cnn import functional as F_ours

# id: (N, C_in, H, W, C_out, kernel, stride, padding, groups, conv bias, momentum)
CASES = {
    "basic": (2, 3, 7, 7, 6, 3, 1, 1, 1, True, 0.1),
    "no_conv_bias": (2, 3, 7, 7, 6, 3, 1, 1, 1, False, 0.1),
    "groups2": (2, 4, 6, 6, 6, 3, 1, 1, 2, True, 0.1),
    "depthwise": (2, 4, 6, 6, 4, 3, 1, 1, 4, False, 0.1),
    "stride2": (2, 3, 9, 9, 5, 3, 2, 1, 1, True, 0.1),
    "momentum_none": (2, 3, 6, 6, 4, 3, 1, 1, 1, True, None),
    "pointwise_odd_channels": (3, 5, 4, 5, 7, 1, 1, 0, 1, False, 0.3),
}


def make_pair(case, dtype=torch.float32, bn_options=None, relu=True, padding_mode="zeros"):
    """(fused ConvBNReLU2d in dtype, torch's unfused Sequential in float64), same state."""
    n, c_in, h, w, c_out, k, stride, padding, groups, bias, momentum = case
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=bias,
                     padding_mode=padding_mode)
    bn = nn.BatchNorm2d(c_out, momentum=momentum, **(bn_options or {}))
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    ref = nn.Sequential(conv, bn, nn.ReLU()).to(DEVICE, torch.float64)
    fused_conv, fused_bn = copy.deepcopy(conv).to(DEVICE, dtype), copy.deepcopy(bn).to(DEVICE)
    fused_bn.to(dtype)
    fused = cnn.ConvBNReLU2d(fused_conv, fused_bn, nn.ReLU() if relu else None)
    return fused, ref, (n, c_in, h, w)


def make_input(shape, layout="nchw", dtype=torch.float32):
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def compare_step(fused, ref, x, what, dtype=torch.float32, lr=0.1):
    """Forward + backward of both on x, every result compared, then an SGD step on both so
    the next step starts from updated (still equal) parameters."""
    xa = x.detach().clone().requires_grad_()
    xr = x.detach().double().requires_grad_()
    y, y_ref = fused(xa), ref(xr)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), what
    grad = torch.randn(y_ref.shape, device=DEVICE, dtype=torch.float64)
    y.backward(grad.to(dtype))
    y_ref.backward(grad)
    assert_matches(y, y_ref, dtype, f"{what}: output")
    assert_matches(xa.grad, xr.grad, dtype, f"{what}: grad_input")
    for (name, p), (_, p_ref) in zip(fused.named_parameters(), ref.named_parameters(),
                                     strict=True):
        assert (p.grad is None) == (p_ref.grad is None), f"{what}: {name}"
        if p.grad is not None:
            assert_matches(p.grad, p_ref.grad, dtype, f"{what}: grad of {name}")
    for (name, b), (_, b_ref) in zip(fused.named_buffers(), ref.named_buffers(), strict=True):
        if name.endswith("num_batches_tracked"):
            assert b.item() == b_ref.item(), f"{what}: {name}"
        else:
            assert_matches(b, b_ref, dtype, f"{what}: {name}")
    with torch.no_grad():
        for p, p_ref in zip(fused.parameters(), ref.parameters(), strict=True):
            if p.grad is not None:
                p -= lr * p.grad
                p_ref -= lr * p_ref.grad
                p.grad = p_ref.grad = None


def train_then_eval(fused, ref, shape, layout="nchw", steps=2, dtype=torch.float32):
    for i in range(steps):
        compare_step(fused, ref, make_input(shape, layout, dtype), f"train step {i}", dtype)
    fused.eval()
    ref.eval()
    compare_step(fused, ref, make_input(shape, layout, dtype), "eval", dtype)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_unfused_torch(case):
    fused, ref, shape = make_pair(case)
    train_then_eval(fused, ref, shape, steps=3 if case[-1] is None else 2)


@pytest.mark.parametrize("case_id", ["basic", "stride2"])
def test_channels_last(case_id):
    fused, ref, shape = make_pair(CASES[case_id])
    train_then_eval(fused, ref, shape, layout="channels_last")


@pytest.mark.parametrize("bn_options", [{"affine": False}, {"track_running_stats": False},
                                        {"eps": 1e-2}], ids=["no_affine", "untracked", "eps"])
def test_batch_norm_options(bn_options):
    fused, ref, shape = make_pair(CASES["basic"], bn_options=bn_options)
    train_then_eval(fused, ref, shape, steps=1)


def test_padding_mode_reflect():
    fused, ref, shape = make_pair(CASES["basic"], padding_mode="reflect")
    train_then_eval(fused, ref, shape, steps=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(dtype):
    fused, ref, shape = make_pair(CASES["basic"], dtype=dtype)
    x = make_input(shape, dtype=dtype)
    y, y_ref = fused(x), ref(x.double())
    # the conv output is rounded to dtype before torch's batch norm but not before ours
    assert_matches(y, y_ref, dtype, "output")
    assert_matches(fused[1].running_mean, ref[1].running_mean, dtype, "running_mean")
    fused.eval()
    ref.eval()
    assert_matches(fused(x), ref(x.double()), dtype, "eval output")


@pytest.mark.parametrize("frozen", ["input", "conv", "bn_affine", "conv_bias_only"])
def test_needs_input_grad(frozen):
    """Only the gradients asked for are computed, and those match torch's."""
    fused, ref, shape = make_pair(CASES["basic"])
    for model in (fused, ref):
        if frozen == "conv":
            model[0].requires_grad_(False)
        elif frozen == "bn_affine":
            model[1].requires_grad_(False)
        elif frozen == "conv_bias_only":
            model.requires_grad_(False)
            model[0].bias.requires_grad_(True)
    x = make_input(shape)
    xa = x.clone().requires_grad_(frozen != "input")
    xr = x.double().requires_grad_(frozen != "input")
    fused(xa).sum().backward()
    ref(xr).sum().backward()
    assert (xa.grad is None) == (xr.grad is None)
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters(), strict=True):
        assert (p.grad is None) == (p_ref.grad is None), name
        if p.grad is not None:
            assert_matches(p.grad, p_ref.grad, what=name)


def test_state_dict_keys_and_loading_both_ways():
    fused, ref, _ = make_pair(CASES["basic"])
    seq = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    assert list(fused.state_dict()) == list(seq.state_dict())
    assert list(fused.state_dict())[:2] == ["0.weight", "0.bias"]
    assert "1.running_mean" in fused.state_dict()
    fused.load_state_dict(seq.state_dict())
    seq.load_state_dict(fused.state_dict())
    assert isinstance(fused, nn.Sequential)


def test_constructor_checks():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    assert isinstance(cnn.ConvBNReLU2d(conv, bn)[2], nn.ReLU)
    assert isinstance(cnn.ConvBNReLU2d(cnn.Conv2d(3, 4, 3), cnn.BatchNorm2d(4), cnn.ReLU()),
                      cnn.ConvBNReLU2d)
    with pytest.raises(TypeError):
        cnn.ConvBNReLU2d(bn, conv)
    with pytest.raises(TypeError):
        cnn.ConvBNReLU2d(conv, bn, nn.Sigmoid())
    with pytest.raises(ValueError, match="features"):
        cnn.ConvBNReLU2d(conv, nn.BatchNorm2d(5))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 3, 3, 3)], ids=["unbatched", "one_value"])
def test_errors_match_unfused_torch(shape):
    fused, ref, _ = make_pair((1, 3, 3, 3, 6, 3, 1, 0, 1, True, 0.1))
    x = torch.randn(shape, device=DEVICE)
    with pytest.raises(ValueError) as theirs:
        ref(x.double())
    before = fused[1].running_mean.clone()
    with pytest.raises(ValueError) as ours:
        fused(x)
    assert str(ours.value) == str(theirs.value)
    assert torch.equal(fused[1].running_mean, before)


def test_gradcheck_training_and_eval():
    # fast mode: one random projection of the Jacobian, since each forward costs 3 launches
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    params = [torch.randn(s, dtype=torch.float64, device=DEVICE, requires_grad=True)
              for s in ((4, 1, 2, 2), (4,), (4,), (4,))]
    rm = torch.zeros(4, dtype=torch.float64, device=DEVICE)
    rv = torch.ones(4, dtype=torch.float64, device=DEVICE) * 2
    for training in (True, False):
        fn = lambda x, w, b, g, beta: cnn.functional.conv_bn_relu2d(
            x, w, b, None if training else rm, None if training else rv, g, beta, padding=1,
            groups=2, training=training)
        assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


# ------------------------------------------------------------ launches and torch compute ops

# allocations and views only: on a GPU every other aten op is a kernel launch of its own
ALLOWED_OPS = {"empty", "empty_strided", "empty_like", "new_empty", "view", "as_strided", "t",
               "unsqueeze", "alias", "_unsafe_view"}


class _OpRecorder(TorchDispatchMode):
    """Lists the aten ops run outside kernel launches (the interpreter's own are skipped)."""

    def __init__(self):
        super().__init__()
        self.ops, self.in_kernel = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_kernel and func.namespace != "cnn":  # torch.ops.cnn: ours, launches
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def inside_kernel(self):
        """Entered around each launch: the ops run there are the launch's own."""
        self.in_kernel += 1
        try:
            yield
        finally:
            self.in_kernel -= 1


@pytest.fixture
def launch_log():
    """(launched kernel names, op recorder) for code run under the returned recorder."""
    recorder = _OpRecorder()
    with launches(around=recorder.inside_kernel) as launched:
        yield launched, recorder


# Training runs eagerly under a dispatch mode (a StatefulOp), so the recorder sees the
# launcher's own torch ops there; evaluation goes through the library op, which it sees whole.
LAUNCH_CASES = {
    "tap_major_momentum_none": (2, 16, 4, 4, 6, 3, 1, 1, 1, True, None),
    "packed_rgb": pytest.param(CASES["basic"], marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="the conv forward pads a 3-channel input to 4 and flattens the weight with "
               "torch ops (constant_pad_nd) on every call: pack_pixels, flat_weight")),
}


@pytest.mark.parametrize("case", LAUNCH_CASES.values(), ids=LAUNCH_CASES.keys())
def test_launches_per_forward(case, launch_log):
    launched, recorder = launch_log
    fused, _, shape = make_pair(case)
    # A channels_last model: the kernels' own layout, so no conversion (an NCHW weight is
    # copied to it once per call).
    fused = fused.to(memory_format=torch.channels_last)
    x = make_input(shape, "channels_last")
    fused(x)  # warm-up: autotuning (GPU) may launch more than once per call
    launched.clear()
    with recorder:
        fused(x)
    assert launched == ["conv2d_forward_kernel", "batch_norm_finalize_kernel",
                        "batch_norm_normalize_kernel"], launched
    assert set(recorder.ops) <= ALLOWED_OPS, recorder.ops
    fused.eval()
    fused(x)
    launched.clear()
    recorder.ops.clear()
    with recorder:
        fused(x)
    assert launched == ["conv2d_forward_kernel"], launched
    assert set(recorder.ops) <= ALLOWED_OPS, recorder.ops


def test_batch_norm_module_launches(launch_log):
    """cnn.BatchNorm2d: training is three launches (num_batches_tracked included), evaluation
    one, and no torch compute op in either."""
    launched, recorder = launch_log
    bn = cnn.BatchNorm2d(3, momentum=None).to(DEVICE)
    x = torch.randn(2, 3, 4, 4, device=DEVICE)
    with recorder:
        bn(x)
    assert launched == ["batch_norm_stats_kernel", "batch_norm_finalize_kernel",
                        "batch_norm_normalize_kernel"]
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    launched.clear()
    with recorder:
        bn(x)
    assert launched == ["batch_norm_normalize_kernel"]
    assert set(recorder.ops) <= ALLOWED_OPS, recorder.ops


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layouts", [("nchw", "channels_last"), ("channels_last", "nchw"),
                                     ("nchw", "nchw")], ids=["cl_weight", "cl_input", "nchw"])
def test_output_layout_is_unfused_torchs(layouts, training):
    """The fused output is laid out as torch's relu(batch_norm(conv2d(x, w))), that is as its
    conv2d output: channels_last when the input or the weight is (a channels_last weight under
    an NCHW input too)."""
    x = make_input((2, 3, 5, 5), layouts[0], torch.float64)
    weight = make_input((4, 3, 3, 3), layouts[1], torch.float64)
    stats = lambda: (torch.zeros(4, device=DEVICE, dtype=torch.float64),
                     torch.ones(4, device=DEVICE, dtype=torch.float64))
    y = cnn.functional.conv_bn_relu2d(x, weight, None, *stats(), training=training)
    want = torch.relu(torch.nn.functional.batch_norm(
        torch.nn.functional.conv2d(x, weight), *stats(), training=training))
    assert y.stride() == want.stride()
    torch.testing.assert_close(y, want)


# ------------------------------------- activations, residual, conv_act2d (cnn.ConvBNAct2d)

ACTIVATIONS = ["none", "relu", "relu6", "leaky_relu", "silu", "hardswish", "gelu"]
TORCH_ACT = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6,
             "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "silu": F.silu,
             "hardswish": F.hardswish, "gelu": F.gelu}
F64 = torch.float64


def t64(*shape, layout=torch.contiguous_format, scale=1.0):
    x = (torch.randn(shape, device=DEVICE, dtype=F64) * scale)
    return x.contiguous(memory_format=layout).requires_grad_()


def check_grads(ours, theirs, inputs, what):
    """Outputs and the gradients of every input, against torch's composite on the same
    values (float64 both: the interpreter is exact there, so the tolerance is fp64's).
    Returns our gradients."""
    assert_matches(ours, theirs, what=f"{what}: output")
    grad = torch.randn_like(theirs)
    grads = torch.autograd.grad(ours, inputs, grad)
    for i, (a, b) in enumerate(zip(grads, torch.autograd.grad(theirs, inputs, grad),
                                   strict=True)):
        assert_matches(a, b, what=f"{what}: grad of input {i}")
    return grads


# Each activation in training and in evaluation, once with a residual and once without
# (alternating which mode gets it): every pair of the grid is covered in 14 cases, not 28.
ACTIVATION_CASES = [(act, training, (i + training) % 2 == 0)
                    for i, act in enumerate(ACTIVATIONS) for training in (True, False)]


@pytest.mark.parametrize("activation, training, residual", ACTIVATION_CASES,
                         ids=[f"{a}-{'train' if t else 'eval'}-{'residual' if r else 'none'}"
                              for a, t, r in ACTIVATION_CASES])
def test_activation_and_residual_match_torch(activation, training, residual):
    """act(bn(conv(x)) + r) against F.conv2d -> F.batch_norm -> + r -> activation: output,
    dx, dw, db, dgamma, dbeta, d residual (a channels_last residual under NCHW input, so its
    gradient must come back in its own layout), running stats, num_batches_tracked."""
    x, w, b = t64(2, 3, 5, 5), t64(4, 3, 3, 3), t64(4)
    gamma, beta = (t64(4, scale=0.5) + 1).detach().requires_grad_(), t64(4)
    r = t64(2, 4, 5, 5, layout=torch.channels_last) if residual else None
    stats = [torch.randn(4, device=DEVICE, dtype=F64), torch.rand(4, device=DEVICE,
                                                                   dtype=F64) + 0.5]
    ref_stats = [s.clone() for s in stats]
    counter = torch.zeros((), dtype=torch.int64, device=DEVICE)
    z = F_ours.conv_bn_act2d(x, w, b, *stats, gamma, beta, padding=1, training=training,
                             momentum=0.3, num_batches_tracked=counter, activation=activation,
                             negative_slope=0.2, residual=r)
    pre = F.batch_norm(F.conv2d(x, w, b, padding=1), *ref_stats, gamma, beta, training=training,
                       momentum=0.3)
    want = TORCH_ACT[activation](pre if r is None else pre + r)
    grads = check_grads(z, want, [x, w, b, gamma, beta] + ([r] if residual else []),
                        activation)
    assert z.stride() == want.stride()
    if residual:
        assert grads[-1].stride() == r.stride()  # channels_last, unlike z
    for ours, theirs in zip(stats, ref_stats, strict=True):
        assert_matches(ours, theirs, what="running statistics")
    assert counter.item() == int(training)


@pytest.mark.parametrize("activation, residual, layout", [
    ("relu", True, "nchw"), ("hardswish", False, "channels_last"), ("none", True, "nchw"),
    ("leaky_relu", False, "unbatched")])
def test_conv_act2d_matches_torch(activation, residual, layout):
    """act(conv(x) + r): MyCNN's and VGG's conv -> activation, without batch norm."""
    shape = (3, 5, 5) if layout == "unbatched" else (2, 3, 5, 5)
    x = t64(*shape, layout=torch.channels_last if layout == "channels_last"
            else torch.contiguous_format)
    w, b = t64(4, 3, 3, 3), t64(4)
    r = t64(*((4, 3, 3) if layout == "unbatched" else (2, 4, 3, 3))) if residual else None
    z = F_ours.conv_act2d(x, w, b, stride=1, activation=activation, negative_slope=0.2,
                          residual=r)
    conv = F.conv2d(x, w, b)
    want = TORCH_ACT[activation](conv if r is None else conv + r)
    check_grads(z, want, [x, w, b] + ([r] if residual else []), activation)
    assert z.stride() == want.stride()


def test_depthwise_carries_the_epilogue():
    """Depthwise convs run the direct kernel with the same residual + activation epilogue
    (here with the pre-activation value kept for the backward; the folded batch norm is
    tested with the depthwise kernels)."""
    x, w = t64(2, 4, 5, 5), t64(8, 1, 3, 3)
    r = t64(2, 8, 5, 5, layout=torch.channels_last)
    z = F_ours.conv_act2d(x, w, None, padding=1, groups=4, activation="leaky_relu",
                          negative_slope=0.2, residual=r)
    want = F.leaky_relu(F.conv2d(x, w, padding=1, groups=4) + r, 0.2)
    check_grads(z, want, [x, w, r], "depthwise")


def test_launches_with_activation_and_residual(launched):
    """Training 3 launches, evaluation 1, conv + activation 1 (with or without a gradient
    to come: the pre-activation value is stored by the same launch)."""
    x, w = torch.randn(2, 3, 5, 5, device=DEVICE), torch.randn(4, 3, 3, 3, device=DEVICE)
    r = torch.randn(2, 4, 5, 5, device=DEVICE)
    stats = torch.zeros(4, device=DEVICE), torch.ones(4, device=DEVICE)
    for training in (True, False):
        F_ours.conv_bn_act2d(x, w, None, *stats, padding=1, training=training,
                             activation="silu", residual=r)  # warm-up: autotuning (GPU)
        launched.clear()
        F_ours.conv_bn_act2d(x, w, None, *stats, padding=1, training=training,
                             activation="silu", residual=r)
        assert launched == ["conv2d_forward_kernel", "batch_norm_finalize_kernel",
                            "batch_norm_normalize_kernel"][:3 if training else 1], launched
    for grad in (False, True):
        F_ours.conv_act2d(x, w.requires_grad_(grad), padding=1, activation="gelu", residual=r)
        launched.clear()
        F_ours.conv_act2d(x, w, padding=1, activation="gelu", residual=r)
        assert launched == ["conv2d_forward_kernel"], launched


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_eager_training_step_is_the_op_pair_bit_for_bit(momentum):
    """Eager training runs one fused implementation (the running stats updated inside the
    three launches); traced code runs torch.ops.cnn.conv_bn_act2d_train, then
    batch_norm_update_stats (one more launch). Same outputs, gradients and state, bit for bit."""
    step = cnn.ops.conv_bn_act.conv_bn_act2d_train_and_update
    g = torch.Generator().manual_seed(2)
    values = [torch.randn(s, generator=g).to(DEVICE)
              for s in ((2, 3, 4, 4), (4, 3, 3, 3), (4,), (4,), (4,), (2, 4, 4, 4))]
    values[0] = values[0].contiguous(memory_format=torch.channels_last)
    geo = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    launch_names = ["conv2d_forward_kernel", "batch_norm_finalize_kernel",
                    "batch_norm_normalize_kernel"]
    if GPU:  # warm-up: autotuning may launch more than once per call
        with torch.no_grad():
            step(*values, *geo, 1e-5, "silu", 0.0, None, None, None, 0.1)
    results = []
    for run, expected in ((step, launch_names),
                          (step.call_pair, [*launch_names, "batch_norm_update_stats_kernel"])):
        leaves = [v.detach().clone().requires_grad_() for v in values]
        state = [torch.linspace(-1, 1, 4, device=DEVICE), torch.linspace(0.5, 2, 4, device=DEVICE),
                 torch.tensor(4 if momentum is None else 0, device=DEVICE)]
        with launches() as launched:
            outputs = run(*leaves, *geo, 1e-5, "silu", 0.0, *state, momentum)
        assert launched == expected
        outputs[0].backward(torch.linspace(-1, 1, outputs[0].numel(), device=DEVICE)
                            .view_as(outputs[0]))
        results.append([*outputs, *(v.grad for v in leaves), *state])
    assert results[0][-1].item() == (5 if momentum is None else 1)
    for ours, pair in zip(*results, strict=True):
        assert torch.equal(ours, pair)


def test_gradcheck_silu_with_residual():
    # x, gamma and the residual: every stage of the chain (each forward costs 3 launches)
    x, gamma, r = (torch.randn(s, dtype=F64, device=DEVICE, requires_grad=True)
                   for s in ((2, 2, 3, 3), (4,), (2, 4, 4, 4)))
    w, b, beta = (torch.randn(s, dtype=F64, device=DEVICE) for s in ((4, 1, 2, 2), (4,), (4,)))
    fn = lambda x, g, r: F_ours.conv_bn_act2d(x, w, b, None, None, g, beta, padding=1,
                                              groups=2, training=True, activation="silu",
                                              residual=r)
    assert torch.autograd.gradcheck(fn, (x, gamma, r), fast_mode=True)


def test_activation_and_residual_errors(launched):
    x, w = torch.randn(2, 3, 5, 5, device=DEVICE), torch.randn(4, 3, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="'tanh'"):
        F_ours.conv_bn_act2d(x, w, training=True, activation="tanh")
    with pytest.raises(ValueError, match="'swish'"):
        F_ours.conv_act2d(x, w, activation="swish")
    # torch's error type for an add whose shapes do not match
    with pytest.raises(RuntimeError):
        F.conv2d(x, w) + torch.randn(2, 4, 3, 2)
    with pytest.raises(RuntimeError, match="residual"):
        F_ours.conv_bn_act2d(x, w, training=True, residual=torch.randn(2, 4, 3, 2))
    with pytest.raises(RuntimeError, match="residual"):
        F_ours.conv_act2d(x, w, residual=torch.randn(4, 3, 3))
    assert launched == []
    with pytest.raises(TypeError, match="Sigmoid"):
        cnn.ConvBNAct2d(nn.Conv2d(3, 4, 3), None, nn.Sigmoid())


def test_gelu_tanh_block_in_evaluation():
    """nn.GELU(approximate='tanh') fuses too: one launch, torch's result."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3).to(DEVICE), nn.BatchNorm2d(4).to(DEVICE).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    block = cnn.ConvBNAct2d(conv, bn, nn.GELU(approximate="tanh"))
    with launches() as launched:
        y = block(x)
    assert launched == ["conv2d_forward_kernel"]
    torch.testing.assert_close(y, F.gelu(bn(conv(x)), approximate="tanh"), rtol=1e-4, atol=1e-5)


def test_conv_bn_act_module():
    """cnn.ConvBNAct2d: the keys of nn.Sequential(conv, bn, act) / (conv, act), the bn's
    training flag picks the mode, forward(input, residual) against the unfused modules."""
    conv, bn, act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.3)
    fused = cnn.ConvBNAct2d(copy.deepcopy(conv), copy.deepcopy(bn), cnn.ReLU() and act)
    assert list(fused.state_dict()) == list(nn.Sequential(conv, bn, act).state_dict())
    no_bn = cnn.ConvBNAct2d(copy.deepcopy(conv), activation=nn.SiLU(inplace=True))
    assert list(no_bn.state_dict()) == list(nn.Sequential(conv, nn.SiLU()).state_dict())
    assert isinstance(cnn.ConvBNReLU2d(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), cnn.ConvBNAct2d)
    fused, no_bn, conv, bn = (m.to(DEVICE, F64) for m in (fused, no_bn, conv, bn))
    x, r = t64(2, 3, 5, 5), t64(2, 4, 5, 5)
    for training in (True, False):
        fused.train(training)
        bn.train(training)
        check_grads(fused(x, r), act(bn(conv(x)) + r), [x, r], f"module training={training}")
    assert_matches(fused[1].running_mean, bn.running_mean, what="running_mean")
    assert fused[1].num_batches_tracked.item() == bn.num_batches_tracked.item() == 1
    check_grads(no_bn(x), F.silu(conv(x)), [x], "no batch norm")

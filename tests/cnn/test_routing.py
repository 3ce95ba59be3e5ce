"""cnn.enable / cnn.disable / cnn.enabled: torch's own functional calls and nn modules run on
our kernels (outputs, gradients and running stats equal torch's, kernels launched), the mode
nests and restores torch's mode stack, fallbacks are counted with their reason, the current
thread only is affected, and torch.compile captures our ops."""
import copy
import statistics
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, assert_matches, launches
from torch import nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode

import cnn
from cnn.routing import NOT_IMPLEMENTED, ROUTES, RoutingMode

DT = torch.float64


def make(*shape, requires_grad=True):
    return torch.randn(*shape, device=DEVICE, dtype=DT, requires_grad=requires_grad)


def functional_model(x, x1, p):
    """Every routed functional entry point, on tiny shapes."""
    y = F.conv2d(x, p["w"], p["b"], padding=1)
    y = F.batch_norm(y, p["rm"], p["rv"], p["g"], p["beta"], training=True, momentum=0.3)
    y = F.relu(y)
    y = F.max_pool2d(y, 2, stride=1)
    y = F.avg_pool2d(y, 2, stride=1, padding=1)
    y = F.conv_transpose2d(y, p["wt"], stride=2)
    y = torch.relu(y) + F.adaptive_max_pool2d(y, 3).mean() + y.relu().mean()
    z = F.adaptive_avg_pool2d(y, (2, 3)).flatten(1)
    z1 = F.conv_transpose1d(F.conv1d(x1, p["w1"], padding=1), p["wt1"], stride=2)
    return z.sum() + (z1 * z1).sum() + torch.batch_norm(
        y, None, None, p["rm2"], p["rv2"], False, 0.1, 1e-5, True).sum()


def functional_params():
    return {"w": make(4, 3, 3, 3), "b": make(4), "g": make(4), "beta": make(4),
            "rm": torch.zeros(4, device=DEVICE, dtype=DT),
            "rv": torch.ones(4, device=DEVICE, dtype=DT),
            "wt": make(4, 2, 3, 3), "w1": make(5, 2, 3), "wt1": make(5, 3, 2),
            "rm2": torch.rand(2, device=DEVICE, dtype=DT),
            "rv2": torch.rand(2, device=DEVICE, dtype=DT) + 0.5}


def run(fn, *tensors):
    """fn's output and the gradients of every tensor that requires grad."""
    out = fn(*tensors)
    leaves = [t for t in tensors if t.requires_grad]
    return out, torch.autograd.grad(out, leaves)


def test_functional_model_runs_on_our_kernels():
    torch.manual_seed(0)
    x, x1, p = make(2, 3, 5, 5), make(2, 2, 6), functional_params()
    q = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in p.items()}
    leaves = [k for k in p if p[k].requires_grad]

    def call(params):  # the leaves are params' own tensors, passed for their gradients
        return lambda x, x1, *leaves: functional_model(x, x1, params)

    with launches() as outside:
        expected, expected_grads = run(call(p), x, x1, *(p[k] for k in leaves))
    assert outside == []
    with launches() as inside, cnn.enabled() as report:
        actual, actual_grads = run(call(q), x, x1, *(q[k] for k in leaves))
    assert inside, "routing launched none of our kernels"
    assert_matches(actual, expected, what="output")
    for name, a, e in zip(["x", "x1", *leaves], actual_grads, expected_grads, strict=True):
        assert_matches(a, e, what=f"grad {name}")
    for name in ("rm", "rv"):
        assert_matches(q[name], p[name], what=name)
    counts = report.snapshot()
    assert {op: c["routed"] for op, c in counts.items()} == {
        "conv2d": 1, "batch_norm": 2, "relu": 3, "max_pool2d": 1, "avg_pool2d": 1,
        "conv_transpose2d": 1, "adaptive_max_pool2d": 1, "adaptive_avg_pool2d": 1,
        "conv1d": 1, "conv_transpose1d": 1}
    assert all(not c["fallbacks"] and not c["errors"] for c in counts.values())


def module_model():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2, stride=1),
        nn.ConvTranspose2d(4, 3, 2, stride=2), nn.ReLU(inplace=True), nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(1), nn.Unflatten(1, (3, 4)),
        nn.Conv1d(3, 2, 3, padding=1), nn.BatchNorm1d(2),
    ).to(device=DEVICE, dtype=DT)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_model_runs_on_our_kernels(training):
    torch.manual_seed(1)
    reference = module_model().train(training)
    for bn in (reference[1], reference[11]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    routed = copy.deepcopy(reference)
    x = make(2, 2, 5, 5)
    with launches() as outside:
        expected, expected_grads = run(lambda x: reference(x).square().sum(), x)
    assert outside == []
    with launches() as inside, cnn.enabled() as report:
        actual, actual_grads = run(lambda x: routed(x).square().sum(), x)
        routed.zero_grad()
    assert inside
    assert_matches(actual, expected, what="output")
    assert_matches(actual_grads[0], expected_grads[0], what="input grad")
    params = dict(reference.named_parameters())
    grads = torch.autograd.grad(reference(x).square().sum(), list(params.values()))
    with cnn.enabled():
        routed_params = dict(routed.named_parameters())
        routed_grads = torch.autograd.grad(routed(x).square().sum(), list(routed_params.values()))
    for name, a, e in zip(params, routed_grads, grads, strict=True):
        assert_matches(a, e, what=f"grad {name}")
    for (name, a), e in zip(routed.named_buffers(), reference.buffers(), strict=True):
        if a.is_floating_point():
            assert_matches(a, e, what=name)
        else:
            assert torch.equal(a, e), name
    assert {op: c["routed"] for op, c in report.snapshot().items()} == {
        "conv2d": 1, "batch_norm": 2, "relu": 2, "max_pool2d": 1, "conv_transpose2d": 1,
        "avg_pool2d": 1, "adaptive_avg_pool2d": 1, "conv1d": 1}


def test_nesting_restores_the_mode_stack_also_on_raise():
    outer_mode = _get_current_function_mode()
    x = make(1, 1, 2, 2, requires_grad=False)
    with cnn.enabled() as outer:
        first = _get_current_function_mode()
        assert isinstance(first, RoutingMode)
        with pytest.raises(ValueError, match="body"), cnn.enabled() as inner:
            assert _get_current_function_mode() is not first
            F.relu(x)
            raise ValueError("body")
        assert _get_current_function_mode() is first
        F.relu(x)
    assert _get_current_function_mode() is outer_mode
    assert inner.routed("relu") == 1 and outer.routed("relu") == 1
    with pytest.raises(RuntimeError), cnn.enabled():
        F.conv2d(x, make(1, 2, 1, 1, requires_grad=False))  # torch's error, torch's type
    assert _get_current_function_mode() is outer_mode


def test_fallbacks_are_counted_with_their_reason():
    x = make(1, 1, 4, 4, requires_grad=False)
    # int64 max pooling: ours refuses the dtype; torch's CUDA kernel too, so CPU tensors there
    ints = torch.arange(16).reshape(1, 1, 4, 4)
    volume, kernel = make(1, 1, 3, 3, 3, requires_grad=False), make(1, 1, 2, 2, 2,
                                                                     requires_grad=False)
    with launches() as launched, cnn.enabled() as report:
        pooled = F.max_pool2d(ints, 2)
        convolved = F.conv3d(volume, kernel)
        meta = F.conv2d(x.to("meta"), make(2, 1, 1, 1, requires_grad=False).to("meta"))
        with pytest.raises(RuntimeError) as ours:
            F.conv2d(x, make(2, 3, 1, 1, requires_grad=False))
        F.max_pool2d(x, 2)
    with pytest.raises(RuntimeError) as theirs:
        F.conv2d(x, make(2, 3, 1, 1, requires_grad=False))
    assert str(ours.value) == str(theirs.value)
    assert torch.equal(pooled, F.max_pool2d(ints, 2))
    assert_matches(convolved, F.conv3d(volume, kernel))
    assert meta.shape == (1, 2, 4, 4) and meta.is_meta
    assert launched, "the float max_pool2d ran on our kernels"
    counts = report.snapshot()
    assert counts["max_pool2d"]["routed"] == 1
    [(reason, n)] = counts["max_pool2d"]["fallbacks"].items()
    assert n == 1
    if DEVICE.type == "cpu":
        assert reason.startswith("NotImplementedError") and "int64" in reason
    else:
        assert reason.startswith("tensor on cpu")
    assert counts["conv3d"] == {"routed": 0, "fallbacks": {NOT_IMPLEMENTED: 1}, "errors": {}}
    [(reason, n)] = counts["conv2d"]["fallbacks"].items()
    assert "meta" in reason and n == 1
    [(message, n)] = counts["conv2d"]["errors"].items()
    assert n == 1 and message == f"RuntimeError: {str(theirs.value).splitlines()[0]}"
    assert "max_pool2d" in str(report) and NOT_IMPLEMENTED in str(report)
    total = cnn.routing_report().snapshot()
    assert total["conv3d"]["fallbacks"][NOT_IMPLEMENTED] >= 1


def test_report_flag_prints_the_report(capsys):
    with cnn.enabled(report=True):
        F.conv3d(make(1, 1, 2, 2, 2, requires_grad=False), make(1, 1, 1, 1, 1, requires_grad=False))
    assert f"conv3d: 0 routed, 1 fallback, 0 raised\n    1 x fallback: {NOT_IMPLEMENTED}" \
        in capsys.readouterr().err


def test_enable_disable_pair():
    before = _get_current_function_mode()
    x = make(2, 3, requires_grad=False)
    report = cnn.enable()
    try:
        assert cnn.enable() is report  # enabling twice does nothing
        mode = _get_current_function_mode()
        assert isinstance(mode, RoutingMode) and mode.report is report
        F.relu(x)
        with TorchFunctionMode():
            with pytest.raises(RuntimeError, match="leave it first"):
                cnn.disable()
    finally:
        cnn.disable()
    assert _get_current_function_mode() is before
    cnn.disable()  # nothing to undo
    with launches() as launched:
        F.relu(x)
    assert launched == [] and report.routed("relu") == 1


def test_other_threads_do_not_see_the_mode():
    x = make(3, requires_grad=False)
    seen = {}

    def worker():
        seen["mode"] = _get_current_function_mode()
        seen["out"] = F.relu(x)

    with cnn.enabled() as report:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        F.relu(x)
    assert seen["mode"] is None
    assert torch.equal(seen["out"], torch.relu(x))
    assert report.routed("relu") == 1


def test_threads_count_into_their_own_reports(monkeypatch):
    monkeypatch.setitem(ROUTES, F.relu, ("relu", lambda input, inplace=False: input))
    x, calls, reports = make(2, requires_grad=False), 2000, {}
    before = cnn.routing_report().routed("relu")

    def worker(name):
        with cnn.enabled() as report:
            for _ in range(calls):
                F.relu(x)
        reports[name] = report

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [reports[i].routed("relu") for i in range(4)] == [calls] * 4
    assert cnn.routing_report().routed("relu") - before == 4 * calls


ENTRY_POINTS = {
    "torch.max_pool2d": ("max_pool2d", lambda x: torch.max_pool2d(x, 2)),
    "F.max_pool2d_with_indices": (
        "max_pool2d", lambda x: F.max_pool2d_with_indices(x, 2, None, 0, 1, False, False)),
    "_nn.max_pool2d_with_indices": (
        "max_pool2d", lambda x: torch._C._nn.max_pool2d_with_indices(x, 2)),
    "_nn.adaptive_max_pool2d": ("adaptive_max_pool2d",
                                lambda x: torch._C._nn.adaptive_max_pool2d(x, 2)),
    "F.adaptive_max_pool2d_with_indices": (
        "adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (2, None), True)),
    "_nn.adaptive_avg_pool2d": ("adaptive_avg_pool2d",
                                lambda x: torch._C._nn.adaptive_avg_pool2d(x, 3)),
    "torch.relu_": ("relu", lambda x: torch.relu_(x.clone())),
    "Tensor.relu_": ("relu", lambda x: x.clone().relu_()),
    "torch.batch_norm_train": ("batch_norm", lambda x: torch.batch_norm(
        x, None, None, None, None, True, 0.1, 1e-5, True)),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_gives_torchs_result(entry):
    op, call = ENTRY_POINTS[entry]
    x = make(1, 2, 4, 5, requires_grad=False)
    expected = call(x)
    with cnn.enabled() as report:
        actual = call(x)
    assert report.snapshot() == {op: {"routed": 1, "fallbacks": {}, "errors": {}}}
    for a, e in zip(*(out if isinstance(out, tuple) else (out,) for out in (actual, expected)),
                    strict=True):
        if a.is_floating_point():
            assert_matches(a, e)
        else:
            assert torch.equal(a, e)


def test_every_route_maps_a_torch_function():
    # nn modules reach these (checked in torch 2.13): keep the table honest if torch renames.
    for func in (torch.conv2d, F.batch_norm, F.relu, F.max_pool2d, F.max_pool2d_with_indices,
                 torch._C._nn.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        assert func in ROUTES


def test_compile_captures_our_ops():
    graphs = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)).to(DEVICE, DT)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = make(1, 1, 6, 6)
    with cnn.enabled():
        out = compiled(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes}
    assert {"cnn.conv2d.default", "cnn.relu.default", "cnn.max_pool2d.default"} <= targets
    expected = model(x)
    assert_matches(out, expected)
    assert_matches(grad, torch.autograd.grad(expected.sum(), x)[0])


def median_us(fn, calls=3000):
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def test_cost_per_call(monkeypatch):
    """Prints the mode's host cost (no assertion on time: 2 shared cores are noisy)."""
    x = torch.randn(4, device=DEVICE)
    monkeypatch.setitem(ROUTES, F.relu, ("relu", lambda input, inplace=False: input))
    add, relu = median_us(lambda: torch.add(x, x)), median_us(lambda: F.relu(x))
    with cnn.enabled() as report:
        routed_add, routed_relu = median_us(lambda: torch.add(x, x)), median_us(lambda: F.relu(x))
    print(f"\ntorch.add {add:.2f} us, under the mode {routed_add:.2f} us; F.relu {relu:.2f} us, "
          f"routed to a no-op {routed_relu:.2f} us ({DEVICE.type}, median of 3000)")
    assert report.routed("relu") == 3000

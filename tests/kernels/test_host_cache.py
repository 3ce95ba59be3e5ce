"""The host path's caches (cnn.kernels.host_cache) and their CUDA-graph safety, with counters.

Without a GPU there is no capture to begin, so ``host_cache.capturing`` is swapped for one
that says a capture is under way: a call made once before must then find every device table
in its cache (nothing copied from the host), and a new one must refuse before any launch.
"""
import importlib

import cnn.kernels.activation as activation_kernels
import cnn.kernels.batch_norm.forward as bn_forward
import cnn.kernels.host_cache as host_cache
import cnn.kernels.pool2d.geometry as pool_geometry
import pytest
import torch
import torch.nn.functional as F
from cnn.kernels.pool2d import max_pool2d as max_launchers
from support import DEVICE
from support.tripwire import launches

import cnn
from cnn.ops import batch_norm as bn_ops
from cnn.ops import pool2d as pool_ops


def tables_built() -> int:
    return sum(s.get("tables_built", 0) for s in host_cache.cache_stats().values())


def misses() -> int:
    return sum(s["misses"] for s in host_cache.cache_stats().values())


def test_signature_cache_is_bounded_first_in_first_out_with_counters():
    cache = host_cache.SignatureCache("tests.fifo", maxsize=2)
    try:
        cache.put("a", 1)
        cache.put("b", 2)
        assert cache.get("a") == 1  # a hit does not reorder: a is still the oldest
        cache.put("c", 3)
        assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
        assert cache.cache_info() == (3, 1, 2, 2)  # hits, misses, maxsize, size
        cache.put("a", 1)  # past the bound again: b, now the oldest, goes
        assert cache.get("b") is None and cache.get("c") == 3 and cache.get("a") == 1
        assert cache.cache_info() == (5, 2, 2, 2)
    finally:
        del host_cache.CACHES["tests.fifo"]


def test_every_cache_is_bounded():
    stats = host_cache.cache_stats()
    assert {"cnn.ops.pool2d.EAGER_CALLS", "cnn.kernels.conv2d.forward.k_table",
            "cnn.kernels.relu.launch_plan"} <= set(stats)
    assert all(0 < s["maxsize"] <= host_cache.DEFAULT_SIZE for s in stats.values())


def test_a_refusal_is_not_cached():
    calls = []

    @host_cache.host_cached(maxsize=4)
    def checked(n):
        calls.append(n)
        if n < 0:
            raise ValueError("negative")
        return n

    try:
        for _ in range(2):
            with pytest.raises(ValueError):
                checked(-1)
        assert checked(1) == checked(1) == 1
        assert calls == [-1, -1, 1]
    finally:
        del host_cache.CACHES[f"{__name__}.{checked.__qualname__}"]


def test_a_table_miss_during_capture_raises_and_a_hit_does_not(monkeypatch):
    @host_cache.device_table(maxsize=4)
    def table(n, device):
        return torch.arange(n, device=device)

    name = f"{__name__}.{table.__qualname__}"
    try:
        first = table(3, DEVICE)
        monkeypatch.setattr(host_cache, "capturing", lambda: True)
        assert table(3, DEVICE) is first  # warmed up before the capture: no copy
        with pytest.raises(host_cache.TableMissDuringCapture, match="before torch.cuda.graph"):
            table(4, DEVICE)
        assert host_cache.cache_stats()[name]["tables_built"] == 1
    finally:
        del host_cache.CACHES[name], host_cache.TABLES_BUILT[name]


def conv_step(x, w):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    cnn.functional.conv2d(x, w, padding=1).sum().backward()
    return x.grad, w.grad


def test_a_repeated_conv_call_copies_no_table_during_capture(launched, monkeypatch):
    """The flattened-K forward and input gradient (channels < 16) read index tables: a call
    made once before a capture finds them on the device; a new shape refuses to copy one,
    before any launch."""
    host_cache.clear_caches()  # another test in this process may have planned these shapes
    x, w = torch.randn(1, 2, 5, 5, device=DEVICE), torch.randn(3, 2, 3, 3, device=DEVICE)
    expected = conv_step(x, w)
    built = tables_built()
    assert built > 0
    monkeypatch.setattr(host_cache, "capturing", lambda: True)
    launched.clear()
    grads = conv_step(x, w)
    assert tables_built() == built and launched  # the same launches, no table built
    for ours, reference in zip(grads, expected, strict=True):
        torch.testing.assert_close(ours, reference)
    launched.clear()
    with pytest.raises(host_cache.TableMissDuringCapture):
        cnn.functional.conv2d(x, torch.randn(3, 2, 2, 2, device=DEVICE))
    assert list(launched) == []


def test_a_repeated_pooling_or_relu_call_plans_nothing():
    x = torch.randn(2, 3, 6, 6, device=DEVICE, requires_grad=True)

    def step():
        y = cnn.functional.max_pool2d(cnn.functional.relu(x), 3, 2, 1)
        cnn.functional.avg_pool2d(y, 2, ceil_mode=True).sum().backward()

    step()
    before, eager_hits = misses(), pool_ops.EAGER_CALLS.hits
    step()
    assert misses() == before  # every geometry, plan and checked call found
    assert pool_ops.EAGER_CALLS.hits == eager_hits + 2


def test_a_swapped_knob_keys_another_plan(monkeypatch):
    """Tests swap a launcher's knobs (the int64 variant); cached plans must not hide that."""
    g = pool_geometry.window_geometry((1, 1, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False)
    args = (g, (16, 16, 4, 1), torch.float32, True)
    assert not max_launchers.forward_plan(*args, pool_geometry.knobs()).options["INDEX_64"]
    monkeypatch.setattr(pool_geometry, "needs_int64", lambda *args: True)
    assert max_launchers.forward_plan(*args, pool_geometry.knobs()).options["INDEX_64"]


@pytest.mark.parametrize("options", [dict(kernel_size=(True, 2)), dict(kernel_size=2.0),
                                     dict(kernel_size=2, ceil_mode=1),
                                     dict(kernel_size=2, padding=2)])
def test_a_checked_signature_does_not_let_other_option_types_through(options):
    """True == 1 and 2.0 == 2 as keys: the cached calls below must not let those through."""
    x = torch.randn(1, 2, 4, 4, device=DEVICE)
    cnn.functional.max_pool2d(x, 2, ceil_mode=True)
    cnn.functional.max_pool2d(x, 2)
    cnn.functional.max_pool2d(x, (1, 2))
    with pytest.raises(Exception) as theirs:
        F.max_pool2d(x, **options)
    with pytest.raises(theirs.type):
        cnn.functional.max_pool2d(x, **options)


def test_a_repeated_batch_norm_training_call_is_the_op_pair_bit_for_bit():
    """The second eager call finds its checked signature and takes the lean Function: the
    same three launches, and outputs, gradients and state bit for bit as the traced path's
    op pair (batch_norm_train, then batch_norm_update_stats)."""
    x = torch.randn(2, 3, 2, 2, device=DEVICE).to(memory_format=torch.channels_last)
    dy = torch.linspace(-1, 1, x.numel(), device=DEVICE).view_as(x)

    def step(run):
        xa = x.clone().requires_grad_()
        w = torch.linspace(0.5, 1.5, 3, device=DEVICE).requires_grad_()
        state = [torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)]
        with launches() as launched:
            y = run(xa, w, state)
        y.backward(dy)
        return launched, [y, xa.grad, w.grad, *state]

    def functional(xa, w, state):
        return cnn.functional.batch_norm(xa, *state, w, None, training=True, momentum=0.2)

    def pair(xa, w, state):
        return bn_ops.batch_norm_train_and_update.call_pair(xa, w, None, 1e-5, *state, None,
                                                            0.2)[0]

    step(functional)
    hits = bn_ops.EAGER_CALLS.hits
    launched, ours = step(functional)
    assert bn_ops.EAGER_CALLS.hits == hits + 1
    assert launched == ["batch_norm_stats_kernel", "batch_norm_finalize_kernel",
                        "batch_norm_normalize_kernel"]
    for mine, theirs in zip(ours, step(pair)[1], strict=True):
        assert torch.equal(mine, theirs)


def test_a_checked_batch_norm_signature_keeps_torchs_results_and_refusals():
    """A signature checked once must not let another through: eps 0 is refused; an int
    momentum, a strided weight (copied by the slow path) and evaluation give torch's
    results and running stats."""
    x = torch.randn(2, 3, 2, 2, device=DEVICE)
    strided = torch.linspace(0.5, 1.5, 6, device=DEVICE)[::2]
    cnn.functional.batch_norm(x, torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE),
                              strided, training=True)
    with pytest.raises(ValueError, match="eps must be positive"):
        cnn.functional.batch_norm(x, torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE),
                                  training=True, eps=0.0)
    for training, momentum in ((True, 1), (True, 0.1), (False, 0.1)):
        results = []
        for batch_norm in (cnn.functional.batch_norm, F.batch_norm):
            state = [torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)]
            y = batch_norm(x, *state, strided, training=training, momentum=momentum)
            results.append([y, *state])
        for ours, theirs in zip(*results, strict=True):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 3), (2, 3, 4)])
def test_a_batch_norm_plan_follows_dy_layout_gradients_asked_for_and_momentum(shape):
    """One signature, one BatchNormPlan: its backward is planned per (dy's strides, the
    gradients asked for), and momentum (a value the launches carry) keys its own plan. Each
    call against torch: output, running stats and every gradient asked for."""
    bn_ops.EAGER_CALLS.cache_clear()
    x = torch.randn(shape, device=DEVICE)
    w = torch.linspace(0.5, 1.5, 3, device=DEVICE)
    b = torch.linspace(-1.0, 1.0, 3, device=DEVICE)
    dys = [torch.randn(shape, device=DEVICE),
           torch.randn(tuple(reversed(shape)), device=DEVICE).permute(*range(len(shape))[::-1])]
    calls = [(dy, needs, momentum) for momentum in (0.1, 0.3) for dy in dys
             for needs in ((True, True, True), (False, True, False), (True, False, True))]
    for dy, needs, momentum in calls:
        results = []
        for batch_norm in (cnn.functional.batch_norm, F.batch_norm):
            leaves = [t.clone().requires_grad_(need)
                      for t, need in zip((x, w, b), needs, strict=True)]
            state = [torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)]
            y = batch_norm(leaves[0], *state, leaves[1], leaves[2], training=True,
                           momentum=momentum)
            y.backward(dy)
            results.append([y, *state, *(t.grad for t in leaves if t.requires_grad)])
        for ours, theirs in zip(*results, strict=True):
            torch.testing.assert_close(ours, theirs)
    # One plan per momentum, each with six (dy, grads) pairs, the first of which took the
    # checking path (a signature's first call).
    plans = [e for e in bn_ops.EAGER_CALLS._entries.values() if e]
    assert [len(plan.backward) for plan in plans] == [5, 5]


def test_a_repeated_activation_call_plans_nothing():
    x = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    for _ in range(2):
        before = misses()
        x.grad = None
        y = cnn.functional.silu(cnn.functional.leaky_relu(x, 0.2))
        y.backward(torch.ones_like(y))
    assert misses() == before  # both launch plans found
    expected = x.detach().clone().requires_grad_()
    F.silu(F.leaky_relu(expected, 0.2)).backward(torch.ones_like(y))
    torch.testing.assert_close(y, F.silu(F.leaky_relu(x.detach(), 0.2)))
    torch.testing.assert_close(x.grad, expected.grad)


def test_swapped_batch_norm_and_activation_knobs_key_other_plans(monkeypatch):
    """Tests swap in the GPU's tiles (batch norm's module settings, the activations' tile
    function); cached plans must not hide that."""
    assert bn_forward.reduce_launch(80, 5)[1]["BLOCK_T"] == min(128, bn_forward.REDUCE_BLOCK_T)
    monkeypatch.setattr(bn_forward, "REDUCE_BLOCK_T", 32)
    assert bn_forward.reduce_launch(80, 5)[1]["BLOCK_T"] == 32
    x = torch.randn(120, device=DEVICE)
    assert activation_kernels.launch_plan((120,), (1,), None, (1,), False,
                                          activation_kernels.block_for)[0] == (1,)
    monkeypatch.setattr(activation_kernels, "block_for", lambda numel: 64)
    with launches() as launched:
        cnn.functional.silu(x)
    assert launched == ["activation_kernel"]
    assert activation_kernels.launch_plan((120,), (1,), None, (1,), False,
                                          activation_kernels.block_for)[0] == (2,)


def test_a_checked_conv1d_signature_keeps_torchs_results_and_refusals():
    """The second call finds its checked signature (same output as torch's); an option of
    another type that equals a cached one as a key (True == 1, 1.0 == 1) still gets torch's
    refusal."""
    conv1d = importlib.import_module("cnn.functional.conv1d")
    x = torch.randn(2, 3, 5, device=DEVICE)
    w = torch.randn(4, 3, 2, device=DEVICE)
    cnn.functional.conv1d(x, w, stride=1, padding=1)
    hits = conv1d.CHECKED_CALLS.hits
    torch.testing.assert_close(cnn.functional.conv1d(x, w, stride=1, padding=1),
                               F.conv1d(x, w, stride=1, padding=1))
    assert conv1d.CHECKED_CALLS.hits == hits + 1
    for options in (dict(stride=True, padding=1), dict(stride=1, padding=1.0)):
        with pytest.raises(Exception) as theirs:
            F.conv1d(x, w, **options)
        with pytest.raises(theirs.type):
            cnn.functional.conv1d(x, w, **options)

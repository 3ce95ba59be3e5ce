"""Verified tuning (kernels/verified_tuning.py): a planted wrong config, the fastest by a fake
timer, is dropped for its key with one warning naming kernel, config and key, and torch's
reference runs once per new key; ``CNN_VERIFY_TUNING=0`` lets the wrong config win (so the
check is what catches it); an accumulating kernel (``reset_to_zero``) is left as one launch
leaves it; no agreeing config is an error. Then the conv launchers' references (forward with
its epilogues, input gradient, transposed conv, split weight gradient, depthwise) agree with
their kernels' results and catch a wrong one. Tuning runs here under the interpreter, on
kernels given several configs; the conv kernels have one config there and are not tuned."""
import warnings

import pytest
import support
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from cnn.kernels.activation_math import RELU
from cnn.kernels.conv2d import depthwise
from cnn.kernels.conv2d import weight_grad as implicit_weight_grad
from cnn.kernels.conv2d.geometry import Conv2dGeometry
from cnn.kernels.conv2d.references import weight_grad_reference
from cnn.kernels.runtime import INTERPRET
from cnn.kernels.verified_tuning import (
    TF32_TOLERANCE,
    Reference,
    VerifiedAutotuner,
    tolerance,
    verified_autotune,
)
from support import DEVICE

import cnn
from cnn import kernels

GOOD_SMALL, WRONG, GOOD_LARGE = (triton.Config({"BLOCK": b, "WRONG": w})
                                 for b, w in ((16, False), (32, True), (64, False)))
# The fake timer's milliseconds: the planted wrong config is the fastest.
SPEED = {GOOD_SMALL: 3.0, WRONG: 1.0, GOOD_LARGE: 2.0}


@triton.jit
def _double(x_ptr, y_ptr, n, ACCUMULATE: tl.constexpr, WRONG: tl.constexpr,
            BLOCK: tl.constexpr):
    """y = 2x (ACCUMULATE: y += 2x, atomically); WRONG plants a miscompile: one more."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = 2.0 * tl.load(x_ptr + offs, mask=mask)
    if WRONG:
        y += 1.0
    if ACCUMULATE:
        tl.atomic_add(y_ptr + offs, y, mask=mask)
    else:
        tl.store(y_ptr + offs, y, mask=mask)


def tuner(configs, **options):
    """A fresh verified autotuner over _double (keyed on n) whose benchmark runs each config
    as Triton does but reports SPEED's time."""
    kernel = verified_autotune(configs, key=["n"], **options)(_double)
    bench = kernel._bench

    def fake_bench(*args, config, **meta):
        kernel.do_bench = lambda call, quantiles: (call(), [SPEED[config]] * 3)[1]
        return bench(*args, config=config, **meta)

    kernel._bench = fake_bench
    return kernel


def launch(kernel, x, built, accumulate=False, factor=2.0):
    """y from kernel on x with a reference y = factor * x; ``built`` counts its builds."""
    y = torch.zeros_like(x)

    def reference():
        built.append(x.numel())
        return Reference(lambda dtype: {"y": factor * x.to(dtype)},
                         lambda args: {"y": args["y_ptr"]}, x.dtype)

    kernel[lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),)](
        x, y, x.numel(), ACCUMULATE=accumulate, reference=reference)
    return y


def dropped(caught) -> list:
    return [str(w.message) for w in caught if "disagrees with torch" in str(w.message)]


def test_a_wrong_config_is_dropped_for_its_key_with_one_warning():
    kernel, built = tuner([GOOD_SMALL, WRONG, GOOD_LARGE]), []
    x = torch.arange(40.0, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = launch(kernel, x, built)
    assert torch.equal(y, 2 * x)
    assert kernel.best_config == GOOD_LARGE  # the fastest that agrees
    (message,) = dropped(caught)
    assert "_double with config BLOCK=32, WRONG=True, num_warps=4" in message
    assert "key (n=40, float32)" in message and "y: max error 1" in message
    assert built == [40]
    with warnings.catch_warnings(record=True) as caught:  # the same key: tuned already
        warnings.simplefilter("always")
        assert torch.equal(launch(kernel, x, built), 2 * x)
    assert built == [40] and not dropped(caught)
    with pytest.warns(RuntimeWarning, match="key \\(n=24, float32\\)"):  # a new key
        launch(kernel, x[:24], built)
    assert built == [40, 24]


def test_verification_off_lets_the_fastest_wrong_config_win(monkeypatch):
    monkeypatch.setenv("CNN_VERIFY_TUNING", "0")
    kernel, built = tuner([GOOD_SMALL, WRONG, GOOD_LARGE]), []
    x = torch.arange(40.0, device=DEVICE)
    assert torch.equal(launch(kernel, x, built), 2 * x + 1)
    assert kernel.best_config == WRONG and built == []


def test_an_accumulating_kernel_is_zeroed_after_the_check():
    # One config survives, so no benchmark resets the accumulator: the check must.
    kernel, built = tuner([GOOD_SMALL, WRONG], reset_to_zero=["y_ptr"]), []
    x = torch.arange(40.0, device=DEVICE)
    with pytest.warns(RuntimeWarning, match="WRONG=True"):
        y = launch(kernel, x, built, accumulate=True)
    assert torch.equal(y, 2 * x) and kernel.best_config == GOOD_SMALL


def test_no_agreeing_config_is_an_error():
    kernel = tuner([GOOD_SMALL, GOOD_LARGE])
    with pytest.warns(RuntimeWarning), \
            pytest.raises(RuntimeError, match="no config of _double agrees with torch"):
        launch(kernel, torch.arange(40.0, device=DEVICE), [], factor=3.0)


def test_the_reference_is_torchs_own_op_under_cnns_routing():
    kernel, x = tuner([GOOD_SMALL, WRONG]), torch.arange(-20.0, 20.0, device=DEVICE)
    y = torch.zeros_like(x)
    reference = lambda: Reference(lambda dtype: {"y": 2 * F.relu(x.to(dtype))},  # noqa: E731
                                  lambda args: {"y": args["y_ptr"]}, x.dtype)
    with cnn.enabled() as report, pytest.warns(RuntimeWarning, match="WRONG=True"):
        kernel[(3,)](x.relu(), y, x.numel(), ACCUMULATE=False, reference=reference)
    assert report.routed("relu") == 1  # x.relu() above; the reference's F.relu is torch's
    assert torch.equal(y, 2 * x.relu())


def test_a_result_no_farther_than_torchs_own_agrees():
    want = {"y": torch.tensor([1.0], dtype=torch.float64)}
    ours = {"y": torch.tensor([1.1])}
    reference = Reference(None, None, torch.float32)
    assert "max error 0.1" in reference.disagreement(ours, want, lambda: {"y": torch.tensor([1.0])})
    assert reference.disagreement(ours, want, lambda: {"y": torch.tensor([0.8])}) is None


def test_the_tolerances_are_the_tests():
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        tf32 = dtype == torch.float32 and not INTERPRET and torch.backends.cudnn.allow_tf32
        assert tolerance(dtype, tf32) == support.tolerance(dtype)
    assert tolerance(torch.float32, tf32=True) == TF32_TOLERANCE


@pytest.fixture
def references(monkeypatch):
    """(launch's arguments, its Reference) of every verified kernel launched in the test."""
    seen, run = [], VerifiedAutotuner.run

    def recording_run(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        seen.append((kwargs, self.reference_builder()))
        return out

    monkeypatch.setattr(VerifiedAutotuner, "run", recording_run)
    return seen


def assert_references_judge_right(seen, count):
    assert len(seen) == count
    for args, reference in seen:
        expected = reference.torch_result(torch.float64)
        same = lambda: reference.torch_result(reference.dtype)  # noqa: E731
        observed = reference.kernel_result(args)
        assert reference.disagreement(observed, expected, same) is None, sorted(observed)
        name = next(iter(observed))
        wrong = dict(observed, **{name: observed[name].contiguous().clone()})
        wrong[name].view(-1)[-1] += 1.0
        assert reference.disagreement(wrong, expected, same).startswith(name)


def _randn(*shape):
    return torch.randn(*shape, device=DEVICE)


def test_the_implicit_gemm_launchers_references(references):
    x, w, b = _randn(2, 3, 6, 5), _randn(4, 3, 3, 3), _randn(4)
    g = Conv2dGeometry.from_shapes(x.shape, w.shape, (2, 1), (1, 0, 2, 1), (1, 1), 1)
    y, _ = kernels.conv2d.conv2d_forward(x, w, b, g, stats=True)
    bn = (_randn(4), _randn(4).abs() + 0.5, _randn(4), _randn(4), 1e-5)
    kernels.conv2d.conv2d_forward(x, w, b, g, activation=RELU, bn_eval=bn)
    dy = _randn(*y.shape)
    kernels.conv2d.conv2d_input_grad(dy, w, x, g)
    grad_weight, grad_bias, launches = implicit_weight_grad.launch_arguments(dy, x, w, g, True,
                                                                             split=2)
    implicit_weight_grad.run_weight_grad(grad_weight, grad_bias, launches, empty=False,
                                         reference=lambda: weight_grad_reference(dy, x, w, g,
                                                                                 True))
    # conv_transpose2d's forward is the input gradient, with a negative bottom/right padding.
    cnn.functional.conv_transpose2d(_randn(1, 4, 3, 3), _randn(4, 2, 2, 2), stride=2,
                                    padding=1, output_padding=1)
    assert_references_judge_right(references, 5)


def test_the_depthwise_launchers_references(references):
    # A 1x2 kernel: the interpreter's depthwise tiles are large, and each tap costs.
    x, w = _randn(2, 3, 5, 5), _randn(6, 1, 1, 2)
    g = Conv2dGeometry.from_shapes(x.shape, w.shape, (1, 1), (0, 0, 1, 0), (1, 1), 3)
    y, _ = kernels.conv2d.conv2d_forward(x, w, None, g, stats=True, activation=RELU)
    dy = _randn(*y.shape)
    kernels.conv2d.conv2d_input_grad(dy, w, x, g)
    grad_weight, grad_bias, launches = depthwise.weight_grad_launch_arguments(dy, x, w, g, True,
                                                                              split=2)
    implicit_weight_grad.run_weight_grad(grad_weight, grad_bias, launches, empty=False,
                                         reference=lambda: weight_grad_reference(dy, x, w, g,
                                                                                 True))
    assert_references_judge_right(references, 3)

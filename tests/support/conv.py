"""Comparing a convolution of ours with torch's: the same values, torch in float64, the same
random output gradient, then the output and every gradient at the dtype's tolerance."""
import torch

from . import assert_matches


def run_both(ours, theirs, x, weight, bias, options, grad_seed=1):
    """``ours(x, weight, bias, **options)`` and ``theirs`` on float64 copies; returns
    ((y, x, w, b), (y_ref, x_ref, w_ref, b_ref)) with the gradients in .grad."""
    mine = [t.detach().clone().requires_grad_() if t is not None else None
            for t in (x, weight, bias)]
    ref = [t.detach().double().requires_grad_() if t is not None else None
           for t in (x, weight, bias)]
    y = ours(*mine, **options)
    y_ref = theirs(*ref, **options)
    grad = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(grad_seed))
    grad = grad.to(device=x.device, dtype=x.dtype)
    y.backward(grad)
    y_ref.backward(grad.double())
    return (y, *mine), (y_ref, *ref)


def check_all(ours, ref, dtype=torch.float32):
    """Output (shape and dtype too), input, weight and bias gradients of ``run_both``'s pair."""
    (y, x, w, b), (y_ref, x_ref, w_ref, b_ref) = ours, ref
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert_matches(y, y_ref, dtype, "output")
    assert_matches(x.grad, x_ref.grad, dtype, "grad_input")
    assert_matches(w.grad, w_ref.grad, dtype, "grad_weight")
    if b is not None:
        assert_matches(b.grad, b_ref.grad, dtype, "grad_bias")

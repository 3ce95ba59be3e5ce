"""torch.func transforms over our ops: grad, jacrev and vmap of conv2d, the poolings and ReLU
give torch's results (float64). Batch norm and the fused layer are not supported under
torch.func's grad: torch raises its own RuntimeError there (README, PyTorch 2 section)."""
import pytest
import torch
import torch.nn.functional as F
from support import DEVICE

import cnn

F64 = torch.float64


def _pairs():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=F64, generator=g).to(DEVICE)
    return {
        "conv2d": (lambda t: cnn.functional.conv2d(t, w, padding=1, stride=2),
                   lambda t: F.conv2d(t, w, padding=1, stride=2)),
        "relu": (cnn.functional.relu, F.relu),
        "max_pool2d": (lambda t: cnn.functional.max_pool2d(t, 3, 2, 1),
                       lambda t: F.max_pool2d(t, 3, 2, 1)),
        "avg_pool2d": (lambda t: cnn.functional.avg_pool2d(t, 2),
                       lambda t: F.avg_pool2d(t, 2)),
        "adaptive_avg_pool2d": (lambda t: cnn.functional.adaptive_avg_pool2d(t, 3),
                                lambda t: F.adaptive_avg_pool2d(t, 3)),
    }


TRANSFORMS = {
    "grad": lambda f, x: torch.func.grad(lambda t: (f(t) ** 2).sum())(x),
    "jacrev": lambda f, x: torch.func.jacrev(lambda t: f(t).sum((0, 2, 3)))(x),
    "vmap": lambda f, x: torch.func.vmap(f)(x),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("op", list(_pairs()))
def test_transform_matches_torch(op, transform):
    ours, theirs = _pairs()[op]
    x = torch.randn(2, 3, 7, 6, dtype=F64, device=DEVICE)
    got, want = TRANSFORMS[transform](ours, x), TRANSFORMS[transform](theirs, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_batch_norm_under_func_grad_raises_torchs_error():
    x = torch.randn(2, 3, 4, 4, dtype=F64, device=DEVICE)
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda t: cnn.functional.batch_norm(t, None, None,
                                                             training=True).sum())(x)

"""MyCNN: shapes, the seed's initialisation, and the two backends' equivalence (same parameters
for the same seed, same state_dict keys, same outputs). Triton forwards run on batches of 2."""
import math

import pytest
import torch
from support import DEVICE, tolerance
from torch import nn

import cnn
from cnn.models import MyCNN

KEYS = ["conv1.0.weight", "conv1.0.bias", "conv2.0.weight", "conv2.0.bias",
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
BN_KEYS = [f"conv{i}.1.{k}" for i in (1, 2)
           for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


@pytest.mark.parametrize("batchnorm", [False, True])
def test_backends_share_parameters_and_keys(batchnorm):
    a = MyCNN(dropout=0.5, batchnorm=batchnorm, backend="triton", seed=7)
    b = MyCNN(dropout=0.5, batchnorm=batchnorm, backend="torch", seed=7)
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb) == sorted(KEYS + (BN_KEYS if batchnorm else []))
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert not torch.equal(MyCNN(seed=8).fc1.weight, a.fc1.weight)


def test_triton_model_is_built_from_our_layers():
    plain = MyCNN(backend="triton")
    assert type(plain.conv1[0]) is cnn.Conv2d and type(plain.conv1[1]) is cnn.ReLU
    assert type(plain.pool1) is cnn.MaxPool2d and type(plain.relu) is cnn.ReLU
    fused = MyCNN(batchnorm=True, backend="triton")
    assert type(fused.conv2) is cnn.ConvBNReLU2d and type(fused.conv2[1]) is cnn.BatchNorm2d
    reference = MyCNN(batchnorm=True, backend="torch")
    assert type(reference.conv2) is nn.Sequential and type(reference.conv2[0]) is nn.Conv2d
    with pytest.raises(ValueError, match="backend"):
        MyCNN(backend="cudnn")


def test_seed_initialisation():
    model = MyCNN(batchnorm=True, seed=0)
    for conv in (model.conv1[0], model.conv2[0]):
        w = conv.weight
        assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.01) < 1.5e-3
        assert torch.all(conv.bias == 0)
    for fc in (model.fc1, model.fc2):
        bound = math.sqrt(6 / (fc.in_features + fc.out_features))  # xavier_uniform
        assert fc.weight.abs().max() <= bound
        assert abs(fc.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert torch.all(fc.bias == 0)
    assert torch.all(model.conv1[1].weight == 1) and torch.all(model.conv1[1].bias == 0)


def test_global_rng_without_seed():
    torch.manual_seed(3)
    a = MyCNN(backend="torch")
    torch.manual_seed(3)
    b = MyCNN(backend="triton")
    assert torch.equal(a.conv1[0].weight, b.conv1[0].weight)


def test_shapes_torch_backend():
    model = MyCNN(dropout=0.5, batchnorm=True, backend="torch")
    x = torch.randn(5, 1, 28, 28)
    h = model.pool1(model.conv1(x))
    assert h.shape == (5, 32, 14, 14)
    assert model.pool2(model.conv2(h)).shape == (5, 64, 7, 7)
    assert model(x).shape == (5, 10)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_triton_forward_and_backward_match_torch(batchnorm):
    """Same seed, same input: logits and every parameter gradient agree (training mode)."""
    x = torch.randn(2, 1, 28, 28, device=DEVICE)
    y = torch.tensor([3, 7], device=DEVICE)
    grads = {}
    for backend in ("triton", "torch"):
        model = MyCNN(batchnorm=batchnorm, backend=backend, seed=1).to(DEVICE)
        logits = model(x)
        nn.functional.cross_entropy(logits, y).backward()
        grads[backend] = (logits, {k: p.grad for k, p in model.named_parameters()})
    rtol, atol = tolerance(torch.float32)
    logits_t, grads_t = grads["triton"]
    logits_r, grads_r = grads["torch"]
    assert logits_t.shape == (2, 10)
    torch.testing.assert_close(logits_t, logits_r, rtol=rtol, atol=atol)
    for key in grads_r:
        # A bias gradient is a sum of dY, like its weight's (of dY * x): their rounding is alike.
        # Under batch norm the conv bias gradient is exactly 0, so only that shared scale is
        # meaningful for it (both sides are ~1e-6 of the weight gradient there).
        scale = max(grads_r[key].abs().max().item(),
                    grads_r[key.replace(".bias", ".weight")].abs().max().item())
        torch.testing.assert_close(grads_t[key], grads_r[key], rtol=rtol, atol=atol * scale,
                                   msg=key)


def test_checkpoint_moves_between_backends():
    """A trained-looking triton state_dict (batch norm statistics included) loads into the torch
    model (and back) and gives the same evaluation outputs."""
    source = MyCNN(batchnorm=True, backend="triton", seed=2)
    with torch.no_grad():
        for i in (1, 2):
            bn = getattr(source, f"conv{i}")[1]
            bn.running_mean.uniform_(-0.01, 0.01)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    target = MyCNN(batchnorm=True, backend="torch").to(DEVICE)
    target.load_state_dict(source.state_dict(), strict=True)
    back = MyCNN(batchnorm=True, backend="triton").to(DEVICE)
    back.load_state_dict(target.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28, device=DEVICE)
    with torch.no_grad():
        out_triton = back.eval()(x)
        out_torch = target.eval()(x)
    rtol, atol = tolerance(torch.float32)
    torch.testing.assert_close(out_triton, out_torch, rtol=rtol, atol=atol)


def test_top_level_package_exposes_the_zoo_and_convert():
    """README's usage: ``import cnn`` alone reaches ``cnn.models.resnet18`` and ``cnn.convert``."""
    import cnn as package
    from cnn.conversion import convert
    from cnn.models.resnet import resnet18

    assert package.models.resnet18 is resnet18 and package.convert is convert
    assert {"convert", "models"} <= set(package.__all__)

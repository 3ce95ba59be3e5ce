"""torch.compile over models built from our layers: each op of ours runs as it is (its own
Triton forward and backward), the code around it is compiled, and the results, gradients and
running statistics are those of the same model run eagerly. aot_eager: no C++ compiler needed."""
import copy

import pytest
import torch
from conftest import DEVICE
from torch import nn

import cnn
from cnn.models import MyCNN


def compiled_matches_eager(model, x, train=True):
    """Run a copy of ``model`` eagerly and ``model`` compiled on the same input; compare the
    outputs, the input and parameter gradients, and the buffers (running statistics)."""
    eager = copy.deepcopy(model)
    model.train(train)
    eager.train(train)
    x_eager = x.clone().requires_grad_()
    x_compiled = x.clone().requires_grad_()
    y_eager = eager(x_eager)
    y_compiled = torch.compile(model, backend="aot_eager")(x_compiled)
    torch.testing.assert_close(y_compiled, y_eager)
    grad = torch.randn_like(y_eager)
    y_eager.backward(grad)
    y_compiled.backward(grad)
    torch.testing.assert_close(x_compiled.grad, x_eager.grad)
    for (name, p_compiled), p_eager in zip(model.named_parameters(), eager.parameters(),
                                           strict=True):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, msg=name)
    for (name, b_compiled), b_eager in zip(model.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(b_compiled, b_eager, msg=name)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_every_layer_under_compile(train):
    torch.manual_seed(0)
    model = nn.Sequential(
        cnn.Conv2d(3, 8, 3, padding=1), cnn.BatchNorm2d(8), cnn.ReLU(),
        cnn.MaxPool2d(2), cnn.AvgPool2d(2, ceil_mode=True), cnn.AdaptiveMaxPool2d(2),
        cnn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).to(DEVICE)
    compiled_matches_eager(model, torch.randn(2, 3, 9, 9, device=DEVICE), train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_layer_under_compile(train):
    torch.manual_seed(0)
    block = cnn.ConvBNReLU2d(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8)).to(DEVICE)
    compiled_matches_eager(block, torch.randn(2, 4, 6, 6, device=DEVICE), train)


def test_mnist_cnn_under_compile():
    model = MyCNN(batchnorm=True, seed=0).to(DEVICE)
    compiled_matches_eager(model, torch.randn(2, 1, 28, 28, device=DEVICE))


def test_fullgraph_says_our_ops_are_not_traced():
    conv = cnn.Conv2d(1, 2, 3).to(DEVICE)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="torch.compiler.disable"):
        torch.compile(conv, backend="aot_eager", fullgraph=True)(torch.randn(1, 1, 5, 5,
                                                                            device=DEVICE))

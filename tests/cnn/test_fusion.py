"""cnn.fuse: which chains it replaces (Sequential and fx-traced modules, torch's and cnn's
classes), and that the fused model gives the unfused model's results in training and
evaluation (outputs, gradients, running stats), compared with torch in float64."""
import copy

import pytest
import torch
from support import DEVICE, assert_matches
from torch import nn

import cnn


class MnistBN(nn.Module):
    """The seed's MNIST CNN with batch norm, shrunk: two conv-bn-relu-pool stages."""

    def __init__(self, conv=nn.Conv2d, bn=nn.BatchNorm2d, relu=nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            conv(1, 4, 3, padding=1), bn(4), relu(), nn.MaxPool2d(2),
            conv(4, 8, 3, padding=1), bn(8), relu(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(8 * 2 * 2, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision writes it: one ReLU module used twice."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class FunctionalReLUBlock(nn.Module):
    """conv -> bn -> F.relu, then a conv whose output feeds two users (not a chain)."""

    def __init__(self):
        super().__init__()
        self.conv = cnn.Conv2d(3, 4, 3, padding=1)
        self.bn = cnn.BatchNorm2d(4)
        self.conv_b = nn.Conv2d(4, 4, 1)
        self.bn_b = nn.BatchNorm2d(4)

    def forward(self, x):
        h = nn.functional.relu(self.bn(self.conv(x)))
        g = self.conv_b(h)
        return torch.relu(self.bn_b(g)) + g


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = -x
        return torch.relu(self.bn(self.conv(x)))


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def compare(fused, ref, x, what):
    """Forward + backward of the fused float32 model and the unfused float64 reference.
    Fusion keeps every parameter and buffer object and (for these models, whose bn is
    registered right after its conv) their order, so they pair up in order."""
    xa = x.clone().requires_grad_()
    xr = x.double().requires_grad_()
    y, y_ref = fused(xa), ref(xr)
    grad = torch.randn(y_ref.shape, device=DEVICE, dtype=torch.float64)
    y.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(y, y_ref, what=f"{what}: output")
    assert_matches(xa.grad, xr.grad, what=f"{what}: grad_input")
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters(), strict=True):
        assert_matches(p.grad, p_ref.grad, what=f"{what}: grad of {name}")
    for (name, b), b_ref in zip(fused.named_buffers(), ref.buffers(), strict=True):
        if b.is_floating_point():
            assert_matches(b, b_ref, what=f"{what}: {name}")
        else:
            assert torch.equal(b, b_ref), f"{what}: {name}"  # num_batches_tracked
    fused.zero_grad()
    ref.zero_grad()


def check_model(model, x, steps=2, reference=None):
    """cnn.fuse(model) against the unfused model in float64 (``reference``, given the same
    state, else a copy of model): training steps, then evaluation."""
    model = randomize_bn(model).to(DEVICE)
    if reference is None:
        reference = copy.deepcopy(model)
    else:
        reference.load_state_dict(model.state_dict())
    ref = reference.to(DEVICE, torch.float64)
    fused = cnn.fuse(model)
    assert fused is not model
    for i in range(steps):
        compare(fused, ref, x, f"train {i}")
    fused.eval()
    ref.eval()
    compare(fused, ref, x, "eval")
    return fused


@pytest.mark.parametrize("classes", ["torch", "cnn"])
def test_mnist_cnn(classes):
    layers = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU) if classes == "torch" else \
        (cnn.Conv2d, cnn.BatchNorm2d, cnn.ReLU)
    model = MnistBN(*layers)
    # the unfused reference is always torch's own layers, in float64
    fused = check_model(model, torch.randn(3, 1, 8, 8, device=DEVICE), reference=MnistBN())
    kinds = [type(m).__name__ for m in fused.features]
    assert kinds == ["ConvBNReLU2d", "Identity", "Identity", "MaxPool2d",
                     "ConvBNReLU2d", "Identity", "Identity", "MaxPool2d"]
    assert isinstance(model.features[0], layers[0])  # the original is untouched


def test_basic_block_fuses_only_the_first_chain():
    model = BasicBlock(4)
    fused = check_model(model, torch.randn(2, 4, 5, 5, device=DEVICE))
    assert isinstance(fused.conv1, cnn.ConvBNReLU2d)
    assert isinstance(fused.bn1, nn.Identity)
    assert type(fused.relu) is nn.ReLU  # shared with the residual: kept, applied twice
    assert type(fused.conv2) is nn.Conv2d and type(fused.bn2) is nn.BatchNorm2d


def test_functional_relu_and_non_chains():
    model = FunctionalReLUBlock()
    fused = check_model(model, torch.randn(2, 3, 4, 4, device=DEVICE), steps=1)
    assert isinstance(fused.conv, cnn.ConvBNReLU2d) and isinstance(fused.bn, nn.Identity)
    assert type(fused.conv_b) is nn.Conv2d  # its output also feeds the sum: no chain


def test_inplace_and_already_fused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 1))
    same = cnn.fuse(model, inplace=True)
    assert same is model and isinstance(model[0], cnn.ConvBNReLU2d)
    assert isinstance(model[3], nn.Conv2d)
    again = cnn.fuse(model)
    assert [type(m) for m in again] == [type(m) for m in model]  # nothing fused twice


def test_non_chains_are_left_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2),  # wrong order
                          nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Sigmoid())
    fused = cnn.fuse(model)
    assert [type(m) for m in fused] == [type(m) for m in model]


def test_untraceable_module_gets_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot trace .*Untraceable"):
        cnn.fuse(nn.Sequential(nn.Linear(2, 2), Untraceable()))

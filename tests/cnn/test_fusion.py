"""cnn.fuse: which chains it fuses (conv -> [bn] -> [+ residual] -> [activation], as modules
or functions, in nn.Sequential and fx-traced modules, torch's and cnn's classes), which it
leaves, that a shared activation runs once per call site, and that the fused model gives the
unfused model's results in training and evaluation (outputs, gradients, running stats),
compared with torch in float64. Whole models: test_model_zoo.py."""
import copy
import io
import operator

import pytest
import torch
from support import DEVICE, assert_matches
from torch import nn
from torch.nn import functional as F

import cnn
from cnn.fusion import FusedGraphModule


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
        self.stride = 1

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


# out = bn(conv(x)); how the residual block writes out + identity, and whether it is fused
RESIDUAL_FORMS = {
    "out += identity": (operator.iadd, True),
    "identity + out": (lambda out, identity: identity + out, True),
    "torch.add(out, identity)": (torch.add, True),
    "out.add_(identity)": (lambda out, identity: out.add_(identity), True),
    # written into the residual: the residual's tensor must change, so it stays
    "identity.add_(out)": (lambda out, identity: identity.add_(out), False),
    "torch.add(out, identity, alpha=2)": (lambda out, i: torch.add(out, i, alpha=2), False),
}


class ResidualBlock(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.add = RESIDUAL_FORMS[form][0]
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x * 1.0  # a tensor of its own, so adding into it leaves x alone
        return self.relu(self.add(self.bn(self.conv(x)), identity))


class Activated(nn.Module):
    """conv [-> bn] -> a functional activation."""

    def __init__(self, activation, bn=True):
        super().__init__()
        self.activation = activation
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3) if bn else None

    def forward(self, x):
        out = self.conv(x)
        return self.activation(out if self.bn is None else self.bn(out))


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


class TwoBranches(nn.Module):
    """Both operands of the add end a conv -> bn chain: the first operand's takes it."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)
        self.conv_b, self.bn_b = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn_a(self.conv_a(x)) + self.bn_b(self.conv_b(x)))


class SharedConv(nn.Module):
    """One conv called twice (shared weights): not a chain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(self.conv(x)))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.tail = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU())

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = -x
        return self.tail(torch.relu(self.bn(self.conv(x))))


def activation_calls(model):
    calls = []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.SiLU)):
            m.register_forward_hook(lambda *_: calls.append(1))
    return calls


def graph_ops(module):
    return [n.op for n in module.graph.nodes if n.op not in ("placeholder", "output")]


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
    assert kinds == ["ConvBNAct2d", "Identity", "Identity", "MaxPool2d",
                     "ConvBNAct2d", "Identity", "Identity", "MaxPool2d"]
    assert type(fused) is MnistBN  # slots replaced: the class and its forward stay
    assert isinstance(model.features[0], layers[0])  # the original is untouched


def test_basic_block_fuses_both_chains_and_its_shared_relu_runs_once_per_call_site():
    model = BasicBlock(2)
    keys = list(model.state_dict())
    fused = check_model(model, torch.randn(2, 2, 5, 5, device=DEVICE), steps=1)
    assert isinstance(fused, FusedGraphModule) and type(fused).__name__ == "BasicBlock"
    assert fused.stride == 1  # instance attributes stay
    assert graph_ops(fused) == ["call_module", "call_module"], fused.code  # conv1, conv2
    assert isinstance(fused.conv1[2], nn.ReLU) and isinstance(fused.conv2[2], nn.ReLU)
    assert isinstance(fused.bn1, nn.Identity) and isinstance(fused.bn2, nn.Identity)
    assert type(fused.relu) is nn.ReLU  # kept in its slot, called by neither site now
    calls = activation_calls(fused)
    fused(torch.randn(2, 2, 5, 5, device=DEVICE))
    assert calls == []
    renamed = [k.replace("conv1.", "conv1.0.").replace("conv2.", "conv2.0.")
               .replace("bn1.", "conv1.1.").replace("bn2.", "conv2.1.") for k in keys]
    assert list(fused.state_dict()) == renamed


@pytest.mark.parametrize("form", list(RESIDUAL_FORMS))
def test_residual_forms(form):
    fused = check_model(ResidualBlock(form), torch.randn(2, 2, 4, 4, device=DEVICE), steps=1)
    assert isinstance(fused.conv, cnn.ConvBNAct2d)
    if RESIDUAL_FORMS[form][1]:
        assert graph_ops(fused) == ["call_function", "call_module"], fused.code  # x * 1, conv
        assert isinstance(fused.conv[2], nn.ReLU)
    else:  # conv -> bn fused; the add and the ReLU stay as written
        assert type(fused) is ResidualBlock and type(fused.relu) is nn.ReLU
        assert isinstance(fused.conv[2], nn.Identity)


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.LeakyReLU(0.2), nn.SiLU(),
                                        nn.Hardswish(), nn.GELU()], ids=lambda m: type(m).__name__)
def test_activation_modules(activation):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), activation)
    fused = check_model(model, torch.randn(2, 2, 4, 4, device=DEVICE), steps=1)
    assert [type(m) for m in fused] == [cnn.ConvBNAct2d, nn.Identity, nn.Identity]
    assert type(fused[0][2]) is type(activation)


FUNCTIONAL = {
    "F.silu": (F.silu, nn.SiLU),
    "F.leaky_relu(x, 0.2)": (lambda x: F.leaky_relu(x, 0.2), nn.LeakyReLU),
    "torch.relu": (torch.relu, nn.ReLU),
    "x.relu()": (lambda x: x.relu(), nn.ReLU),
    "F.gelu(x, approximate='tanh')": (lambda x: F.gelu(x, approximate="tanh"), nn.GELU),
}


@pytest.mark.parametrize("form", list(FUNCTIONAL))
def test_functional_activations(form):
    activation, fused_as = FUNCTIONAL[form]
    fused = check_model(Activated(activation), torch.randn(2, 2, 4, 4, device=DEVICE), steps=1)
    assert isinstance(fused.conv, cnn.ConvBNAct2d)
    if fused_as is None:  # not one the fused kernels compute: conv -> bn fused, gelu stays
        assert type(fused) is Activated and isinstance(fused.conv[2], nn.Identity)
    else:
        assert isinstance(fused, FusedGraphModule) and graph_ops(fused) == ["call_module"]
        assert type(fused.conv[2]) is fused_as
    if form == "F.leaky_relu(x, 0.2)":
        assert fused.conv[2].negative_slope == 0.2
    if form == "F.gelu(x, approximate='tanh')":
        assert fused.conv[2].approximate == "tanh"


def test_conv_activation_without_batch_norm():
    seq = check_model(nn.Sequential(nn.Conv2d(2, 3, 3), nn.SiLU(), nn.Conv2d(3, 2, 1)),
                      torch.randn(2, 2, 4, 4, device=DEVICE), steps=1)
    assert [type(m) for m in seq] == [cnn.ConvBNAct2d, nn.Identity, nn.Conv2d]
    assert isinstance(seq[0][1], nn.Identity) and isinstance(seq[0][2], nn.SiLU)
    traced = check_model(Activated(F.relu, bn=False), torch.randn(2, 2, 4, 4, device=DEVICE),
                         steps=1)
    assert graph_ops(traced) == ["call_module"]


def test_functional_relu_and_non_chains():
    model = FunctionalReLUBlock()
    fused = check_model(model, torch.randn(2, 3, 4, 4, device=DEVICE), steps=1)
    assert isinstance(fused.conv, cnn.ConvBNAct2d) and isinstance(fused.bn, nn.Identity)
    assert type(fused.conv_b) is nn.Conv2d  # its output also feeds the sum: no chain


def test_add_of_two_chains_goes_to_the_first_operand():
    fused = check_model(TwoBranches(), torch.randn(2, 2, 4, 4, device=DEVICE), steps=1)
    assert isinstance(fused.conv_a[2], nn.ReLU) and isinstance(fused.conv_b[2], nn.Identity)
    assert graph_ops(fused) == ["call_module", "call_module"], fused.code


def test_inplace_and_already_fused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 1))
    same = cnn.fuse(model, inplace=True)
    assert same is model and isinstance(model[0], cnn.ConvBNAct2d)
    assert isinstance(model[3], nn.Conv2d)
    again = cnn.fuse(model)
    assert [type(m) for m in again] == [type(m) for m in model]  # nothing fused twice
    relu_block = nn.Sequential(cnn.ConvBNReLU2d(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert type(cnn.fuse(relu_block)[0]) is cnn.ConvBNReLU2d


def test_non_chains_are_left_alone():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(1),  # no conv
                          nn.Conv2d(1, 3, 3), nn.Sigmoid(),  # not an activation we fuse
                          nn.Conv2d(3, 3, 3), nn.BatchNorm2d(2))  # channels differ
    fused = cnn.fuse(model)
    assert [type(m) for m in fused] == [type(m) for m in model]
    shared = cnn.fuse(SharedConv())
    assert type(shared.conv) is nn.Conv2d and type(shared.bn) is nn.BatchNorm2d


def test_untraceable_module_is_left_with_a_warning_and_its_sequentials_fused():
    with pytest.warns(UserWarning, match="cannot trace .*Untraceable"):
        fused = cnn.fuse(nn.Sequential(nn.Linear(2, 2), Untraceable()))
    assert type(fused[1].conv) is nn.Conv2d and type(fused[1].bn) is nn.BatchNorm2d
    assert isinstance(fused[1].tail[0], cnn.ConvBNAct2d)


def test_rewritten_module_survives_deepcopy_and_pickle():
    fused = cnn.fuse(randomize_bn(BasicBlock(2))).to(DEVICE).eval()
    x = torch.randn(1, 2, 4, 4, device=DEVICE)
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(fused), torch.load(buffer, weights_only=False)):
        assert isinstance(copied, FusedGraphModule) and type(copied).__name__ == "BasicBlock"
        assert [n for n, _ in copied.named_modules()] == [n for n, _ in fused.named_modules()]
        assert list(copied.state_dict()) == list(fused.state_dict())
        assert copied.stride == 1 and not copied.training and copied.conv1 is not fused.conv1
        torch.testing.assert_close(copied(x), fused(x), rtol=0, atol=0)
